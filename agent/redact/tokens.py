"""Token formats found anywhere in any text: layer 2 of the redactor.

Each rule recognises one kind of secret by its own shape (a prefix such as `ghp_`, a
JWT's `eyJ….eyJ…`, a PEM block) or by the fixed syntax that carries it (an
`Authorization:` header, `scheme://user:password@host`, `?token=` in a URL,
`Password=` in a connection string). None of them guesses from entropy: that is the
context rules' job. The formats are the public facts also used by gitleaks,
detect-secrets and trufflehog; the code is ours.

Every pattern is linear on any input: each run of characters is bounded (`{1,4096}`),
runs that could backtrack are possessive (`{1,4096}+`), and a pattern that starts with
a run starts only where the previous character cannot continue it (a look-behind), so
no character is scanned from two starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from snapshot_agent.redact.rule import REDACTED_PREFIX, Hit, Rule, Stateless

#: What the command-line filter of earlier versions left; never a secret.
MASK = "***"


def is_redacted(value: str) -> bool:
    """Whether `value` already is a replacement (redaction is idempotent)."""
    return value.startswith(REDACTED_PREFIX) or value == MASK


@dataclass(frozen=True, slots=True)
class PatternRule(Stateless):
    """A stateless rule: every match of `pattern` is a secret, the span of group `group`.

    `group` names the group whose span is the secret ("value"); a pattern without such
    a group (a user's `redaction.extra_patterns` entry) redacts its whole match.
    """

    name: str
    description: str
    pattern: re.Pattern[str]
    label: str
    hints: tuple[str, ...]
    examples: tuple[str, ...] = ()
    benign: tuple[str, ...] = ()
    group: str | int = "value"
    gate: str = ""  # a cheap regex every line with a match matches (rule.py: Scanner)

    def scan(self, line: str) -> list[Hit]:
        """One hit per match, for the span of the secret group (empty spans skipped)."""
        group = self.group if self.group in self.pattern.groupindex else 0
        hits = []
        for match in self.pattern.finditer(line):
            start, end = match.span(group)
            if start < end and not is_redacted(line[start:end]):
                hits.append(Hit(start, end, self.name, self.label))
        return hits


def _rule(
    name: str,
    description: str,
    pattern: str,
    hints: tuple[str, ...],
    examples: tuple[str, ...],
    benign: tuple[str, ...],
    label: str = "",
    gate: str = "",
) -> PatternRule:
    """A `PatternRule` from its parts (the label defaults to the name)."""
    return PatternRule(
        name,
        description,
        re.compile(pattern),
        label or name,
        hints,
        examples,
        benign,
        gate=gate,
    )


# --- Cloud providers ---------------------------------------------------------------

AWS_ACCESS_KEY_ID = _rule(
    "aws-access-key-id",
    "AWS access key ids (AKIA/ASIA/ABIA/ACCA/A3T + 16 characters), anywhere.",
    r"(?<![A-Za-z0-9])(?P<value>(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16})(?![A-Za-z0-9])",
    ("akia", "asia", "abia", "acca", "a3t"),
    (
        "aws_access_key_id = «AKIAUJZDEGXDNCF32EPF»",
        'export AWS_ACCESS_KEY_ID="«ASIA91DHODZDOC9IS0J8»"',
        '{"AccessKeyId": "«ASIA91DHODZDOC9IS0J8»", "Expiration": "2026-11-01T09:00:00Z"}',
        "Credential=«AKIAUJZDEGXDNCF32EPF»/20261101/eu-central-1/s3/aws4_request",
    ),
    (
        "TZ=Asia/Tokyo region=ap-southeast-1",
        "AKIA is the prefix of long-term access key ids",
        "id=AKIAUJZDEGXDNCF32EPFX",  # 21 characters: not a key id
        "arn:aws:iam::123456789012:user/ASIATEAM",
    ),
    "aws-access-key-id",
)

AWS_SECRET_ACCESS_KEY = _rule(
    "aws-secret-access-key",
    "40-character AWS secret access keys after aws_secret_access_key / SecretAccessKey.",
    r"(?i:(?:aws[_.-]?)?secret[_.-]?access[_.-]?key|aws[_.-]?secret[_.-]?key)"
    r"(?:\\?[\"']?[ \t]*(?::|=>|=)[ \t]*\\?[\"']?|[ \t]{1,16})"
    r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    (
        "secretaccess",
        "secret_access",
        "secret-access",
        "secret.access",
        "aws_secret",
        "aws-secret",
        "aws.secret",
        "awssecret",
    ),
    (
        "aws_secret_access_key = «pNxnyVmihA+2O76UMFxFkM+R5Kjp1vRt/1fjORS+»",
        "AWS_SECRET_ACCESS_KEY=«6ilI8ihN5KXSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtk»",
        '  "SecretAccessKey": "«pNxnyVmihA+2O76UMFxFkM+R5Kjp1vRt/1fjORS+»",',
        "aws.secretKey: «6ilI8ihN5KXSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtk»",
    ),
    (
        "aws_secret_access_key = [REDACTED:aws-secret-access-key]",
        "secret_access_key_file = /etc/aws/secret",
        "aws_secret_access_key = short",
    ),
    "aws-secret-key",
)

GOOGLE_API_KEY = _rule(
    "google-api-key",
    "Google API keys (AIza + 35 characters), anywhere.",
    r"(?<![A-Za-z0-9_-])(?P<value>AIza[0-9A-Za-z_-]{35})",
    ("aiza",),
    (
        "maps_key: «AIzawtDDb_xHKas1VOqg6YYZYn9ZhyiA4uoRgna»",
        "GET /geocode/json?address=x&key=«AIzatmUdjAWtGSU8po_799NksnRH9ucAUsdMlHU»",
        '"apiKey": "«AIzatmUdjAWtGSU8po_799NksnRH9ucAUsdMlHU»"',
    ),
    ("AIzaSy is how browser keys start", "dAIzawtDDb_xHKas1VOqg6YYZYn9ZhyiA4uoRgna"),
)

GOOGLE_OAUTH_TOKEN = _rule(
    "google-oauth-token",
    "Google OAuth access tokens (ya29.), refresh tokens (1//0) and client secrets (GOCSPX-).",
    r"(?<![A-Za-z0-9_./-])(?P<value>ya29\.[0-9A-Za-z_-]{20,4096}+"
    r"|1//0[0-9A-Za-z_-]{30,1024}+|GOCSPX-[0-9A-Za-z_-]{20,64}+)",
    ("ya29.", "1//0", "gocspx-"),
    (
        "Authorization token «ya29.LAy0xhnTf0baNaMYmbdzw-Isz0psundmjv_73hbPsETJveImiSy5XcgC»",
        '"refresh_token": "«1//0dsNbXlwDPyniUMyiNlCKqZKTZ7qJwdUS0d7FZTmxLoICfZfu3zMtWfNwD»"',
        "client_secret=«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»",
    ),
    ("ya29 is a prefix", "see https://example.com/1//0", "GOCSPX-short"),
    "google-oauth",
)

AZURE_STORAGE_KEY = _rule(
    "azure-storage-key",
    "Azure AccountKey= / SharedAccessKey= / SharedAccessSignature= in connection strings.",
    r"(?i)(?<![A-Za-z0-9_.-])(?:AccountKey|SharedAccessKey|SharedAccessSignature)"
    r"[ \t]*=[ \t]*(?P<value>[^;\s\"'<>\\]{1,4096}+)",
    ("accountkey", "sharedaccesskey", "sharedaccesssignature"),
    (
        "DefaultEndpointsProtocol=https;AccountName=logs;"
        "AccountKey=«E4YHoDxzoCGmyG+D6Cok0j4ron6Yvy8lrVhZEgVf==»;EndpointSuffix=core.windows.net",
        "Endpoint=sb://bus.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=«JMzoN5ouP47ULvjfb7+kQHn+3+yPbTlKGFkrddYsLVx=»",
        '"conn": "BlobEndpoint=https://a.blob.core.windows.net/;'
        'SharedAccessSignature=«sv=2022-11-02&ss=b&sp=r&sig=2uMksDur4Zlf49yBVae2%3D»"',
    ),
    (
        "SharedAccessKeyName=RootManageSharedAccessKey;EntityPath=events",
        "AccountName=logs;EndpointSuffix=core.windows.net",
        "AccountKey=[REDACTED:azure-key]",
    ),
    "azure-key",
)

AZURE_AD_CLIENT_SECRET = _rule(
    "azure-ad-client-secret",
    "Microsoft Entra (Azure AD) application client secrets (xxx8Q~…).",
    r"(?<![A-Za-z0-9_~.-])(?P<value>[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34})(?![A-Za-z0-9_~.-])",
    ("q~",),
    (
        "AZURE_CLIENT_SECRET=«QRK8Q~SaoKfgFoeOASl1YCJlS24R.5-gA2-q_yfH»",
        '"clientSecret": "«QRK8Q~SaoKfgFoeOASl1YCJlS24R.5-gA2-q_yfH»"',
    ),
    ("path ~/Q~/notes", "abc8Q~short"),
    "azure-client-secret",
)

ALIBABA_ACCESS_KEY_ID = _rule(
    "alibaba-access-key-id",
    "Alibaba Cloud access key ids (LTAI + 20 characters).",
    r"(?<![A-Za-z0-9])(?P<value>LTAI[A-Za-z0-9]{20})(?![A-Za-z0-9])",
    ("ltai",),
    (
        "ALIBABA_CLOUD_ACCESS_KEY_ID=«LTAI06vu1M1p9unB569abdqK»",
        "key «LTAI06vu1M1p9unB569abdqK» used",
    ),
    ("LTAI is a prefix", "ALTAI06vu1M1p9unB569abdqK"),
)

# --- Source hosting, CI and package registries ---------------------------------------

GITHUB_TOKEN = _rule(
    "github-token",
    "GitHub tokens: ghp_/gho_/ghu_/ghs_/ghr_ and fine-grained github_pat_.",
    r"(?<![A-Za-z0-9_])(?P<value>gh[pousr]_[A-Za-z0-9]{36,251}+|github_pat_[A-Za-z0-9_]{22,251}+)",
    ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    (
        "  token: «ghp_6kwXoIIXGvOoNZYW2mZp0zVZomHFwUbbYrEq»",
        "git clone https://x-access-token:«ghs_6yYTWmE4lBYOvfZ8UzDzV8fUkkibjL5DZPjN»@github.com/o/r",
        "GH_TOKEN=«github_pat_0MEQ7wjJJibaZUPgHV7iB3_m03nbqnsGpWLuqIA1id6Vw5DQL05HA064GiIjHGb3CX»",
        '{"token": "«gho_mSM9wCZ7Uw9xfogoEmvnEN5N1aE6PwZPf1Qh»"}',
    ),
    ("ghp_short", "the ghp_ prefix marks a classic personal access token", "xghp_" + "a" * 36),
)

GITLAB_TOKEN = _rule(
    "gitlab-token",
    "GitLab tokens: glpat-, gldt-, glrt-, glptt-, glft-, glsoat-, gloas-, glcbt-, GR1348941….",
    r"(?<![A-Za-z0-9_-])(?P<value>"
    r"(?:gl(?:pat|dt|rt|rtr|ptt|ft|soat|oas|cbt|imt|agent|ffct|wt)-|GR1348941)"
    r"[A-Za-z0-9_-]{20,256}+(?:\.[A-Za-z0-9_-]{2,256}+){0,3})",
    (
        "glpat-",
        "gldt-",
        "glrt-",
        "glrtr-",
        "glptt-",
        "glft-",
        "glsoat-",
        "gloas-",
        "glcbt-",
        "glimt-",
        "glagent-",
        "glffct-",
        "glwt-",
        "gr1348941",
    ),
    (
        "PRIVATE_TOKEN=«glpat-9nhFyJfm5di4PzJ59FHz»",
        "url = https://gitlab-ci-token:«gldt-1CiAhzCueQpBenQtYh5X»@gitlab.example.com/g/p.git",
        'token = "«glrt-j8TPQxjq4i9DoV8gz4Fk»"',
        "curl -X POST -F token=«glptt-75dcad6ba2b0aee0ca923732881584d8c4fa2815» -F ref=main",
    ),
    ("glpat-short", "gitlab runner glrt- prefix", "image: registry.gitlab.com/glpat-scanner"),
)

SLACK_TOKEN = _rule(
    "slack-token",
    "Slack tokens: xoxb-/xoxp-/xoxa-/xoxo-/xoxs-/xoxr-/xoxe-, xoxe.xoxp- and xapp- app tokens.",
    r"(?<![A-Za-z0-9_-])(?P<value>(?:xox[abposre]|xoxe\.xox[bp]|xapp)-[0-9A-Za-z-]{10,512}+)",
    ("xox", "xapp-"),
    (
        "slack_token: «xoxp-39624595711-77774121547-28038528084-28b5b7a767c76fb008f86bebb2737f6a»",
        "SLACK_BOT_TOKEN=«xoxb-614014193141-7058649208312-qdlm7tOtHWnsCGRlrwZbqcab»",
        '"app_token": "«xapp-1-A69M64P2G15-8684335326502-028d512c9791e558e08baa7196b50ac2»"',
    ),
    ("xoxb- prefix", "xapp-shell", "the xox family"),
)

SLACK_WEBHOOK = _rule(
    "slack-webhook",
    "Slack incoming-webhook and workflow URLs: the path after /services/ is the credential.",
    r"(?i)hooks\.slack\.com/(?:services|workflows|triggers)/(?P<value>[A-Za-z0-9_/+-]{10,512}+)",
    ("hooks.slack.com",),
    (
        "webhook_url: https://hooks.slack.com/services/«TIXGY29DB/B8P5QA3E68F/QHeVVEqZe2qpUWnoVPDF2yeE»",
        '"url": "https://hooks.slack.com/workflows/«TIXGY29DB/A8P5QA3E68F/4416/QHeVVEqZe2qpU»"',
    ),
    ("see https://hooks.slack.com/", "hooks.slack.com/services/short"),
)

STRIPE_KEY = _rule(
    "stripe-key",
    "Stripe secret and restricted keys (sk_live_, rk_live_, sk_test_) and webhook secrets.",
    r"(?<![A-Za-z0-9_])(?P<value>(?:sk|rk)_(?:live|test|prod)_[0-9A-Za-z]{10,247}+"
    r"|whsec_[A-Za-z0-9]{24,256}+)",
    ("sk_live_", "rk_live_", "sk_test_", "rk_test_", "sk_prod_", "rk_prod_", "whsec_"),
    (
        "STRIPE_SECRET_KEY=«sk_live_6RsXcNOPmeMjvqPVStNKiaEd»",
        "curl https://api.stripe.com/v1/charges -u «sk_test_bsDe0G9Cryn687neLfjVHq8x»:",
        "stripe.api_key = '«rk_live_FrRgSnRFsTHsDDDXh5Jmtf7E»'",
        "endpoint_secret = «whsec_iM0OGr4hTxoF54Fzbka8FRCztUjAwyuh»",
    ),
    ("pk_live_6RsXcNOPmeMjvqPVStNKiaEd is publishable", "sk_live_short", "whsec_ prefix"),
)

OPENAI_API_KEY = _rule(
    "openai-api-key",
    "OpenAI API keys: sk-proj-, sk-svcacct-, sk-admin- and legacy sk- + 32 or more letters.",
    r"(?P<value>sk-(?<![A-Za-z0-9_-]sk-)(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,512}+"
    r"|[A-Za-z0-9]{32,512}+))",
    ("sk-",),
    (
        "OPENAI_API_KEY=«sk-proj-QaPRYpzbLGViYXjU2JgJngKtFI3OyV2dZAkg05rK_gqv81RKMGHZEM9YpvujA-C5»",
        'openai.api_key = "«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»"',
    ),
    ("sk-learn is not scikit-learn", "sk-proj-short", "disk-0123456789abcdef0123456789abcdef"),
)

ANTHROPIC_API_KEY = _rule(
    "anthropic-api-key",
    "Anthropic API keys (sk-ant-api03-…, sk-ant-admin01-…).",
    r"(?P<value>sk-ant-(?<![A-Za-z0-9_-]sk-ant-)[a-z0-9]{2,16}-[A-Za-z0-9_-]{20,512}+)",
    ("sk-ant-",),
    (
        "ANTHROPIC_API_KEY=«sk-ant-api03-UqBlIFXZ53Ncqe28_ajY75FnCttn6kfaqDeMqG3omjMyXHCabM6JOF8E»",
        'x-api-key-source: "«sk-ant-api03-UqBlIFXZ53Ncqe28_ajY75FnCttn6kfaqDeMqG3omjMyXHCa»"',
    ),
    ("sk-ant-api03- is the prefix", "sk-ant-short"),
)

NPM_TOKEN = _rule(
    "npm-token",
    "npm access tokens (npm_ + 36 characters).",
    r"(?<![A-Za-z0-9_])(?P<value>npm_[A-Za-z0-9]{36,256}+)",
    ("npm_",),
    (
        "//registry.npmjs.org/:_authToken=«npm_Nl5oFA6Qd8Mj7zdnbMjAdTdlzC5T4uUhf7kv»",
        "NPM_TOKEN=«npm_Nl5oFA6Qd8Mj7zdnbMjAdTdlzC5T4uUhf7kv»",
    ),
    ("npm_config_cache=/home/app/.npm", "npm_package_version=0.8.0"),
)

PYPI_TOKEN = _rule(
    "pypi-token",
    "PyPI and TestPyPI upload tokens (pypi-AgE…).",
    r"(?<![A-Za-z0-9_-])(?P<value>pypi-AgE[A-Za-z0-9_-]{50,4096}+)",
    ("pypi-age",),
    (
        "password = «pypi-AgEIcHlwaS5vcmcyx7eNWVQ4vnakJkS1pAWTN3lg8zV5yPU8d0FZfWe7ihGyiRUIQfHOJ»",
        "TWINE_PASSWORD=«pypi-AgEIcHlwaS5vcmcyx7eNWVQ4vnakJkS1pAWTN3lg8zV5yPU8d0FZfWe7ihGyiRUI»",
    ),
    ("pypi-AgE is the macaroon prefix", "repository = pypi"),
)

DOCKERHUB_TOKEN = _rule(
    "dockerhub-token",
    "Docker Hub personal and organisation access tokens (dckr_pat_, dckr_oat_).",
    r"(?<![A-Za-z0-9_])(?P<value>dckr_(?:pat|oat)_[A-Za-z0-9_-]{20,256}+)",
    ("dckr_",),
    (
        "DOCKERHUB_TOKEN=«dckr_pat_zDNhY7AGbX6lTiDYHP9zyBylxLU»",
        "echo «dckr_pat_zDNhY7AGbX6lTiDYHP9zyBylxLU» |",
    ),
    ("dckr_pat_ prefix",),
)

# --- SaaS APIs -----------------------------------------------------------------------

SENDGRID_KEY = _rule(
    "sendgrid-api-key",
    "SendGrid API keys (SG.<22>.<43>).",
    r"(?P<value>SG\.(?<![A-Za-z0-9_-]SG\.)[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})",
    ("sg.",),
    (
        "SENDGRID_API_KEY=«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»",
        "api_key: '«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»'",
    ),
    ("msg.id=42 SG.short.value", "SG.MtEPO6UkzYuF0ie9Pu2njH is too short"),
)

TWILIO_API_KEY = _rule(
    "twilio-api-key",
    "Twilio API key SIDs (SK + 32 hex). Account SIDs (AC…) are identifiers and stay.",
    r"(?P<value>SK(?<![A-Za-z0-9]SK)[0-9a-fA-F]{32})(?![0-9A-Za-z])",
    ("sk",),
    (
        "TWILIO_API_KEY=«SKb19731662b5e803b61ba4168160adb59»",
        "api_key: «SKb19731662b5e803b61ba4168160adb59»",
    ),
    ("TWILIO_ACCOUNT_SID=AC261ff2d3c425c8d99d19bdd0b6cc60d5", "disk SKU SK1234"),
    gate=r"sk[0-9a-f]{32}",
)

MAILGUN_KEY = _rule(
    "mailgun-api-key",
    "Mailgun private API keys (key- + 32 hex).",
    r"(?P<value>key-(?<![A-Za-z0-9_-]key-)[0-9a-f]{32})(?![0-9A-Za-z])",
    ("key-",),
    (
        "MAILGUN_API_KEY=«key-d32cbe54014c2b54b95523cf6941fa1c»",
        "curl -s --user 'api:«key-d32cbe54014c2b54b95523cf6941fa1c»'",
    ),
    ("primary-key-file=/etc/k.pem", "key-rotation-days=30"),
)

MAILCHIMP_KEY = _rule(
    "mailchimp-api-key",
    "Mailchimp API keys (32 hex + -us + datacentre number).",
    r"(?P<value>[0-9a-f]{32}-us[0-9]{1,2})(?![A-Za-z0-9])",
    ("-us",),
    ("MAILCHIMP_KEY=«a76cc0b57aaf89691052be1ceb374dab-us14»",),
    ("lang=en-us", "region en-us14"),
)

HUGGINGFACE_TOKEN = _rule(
    "huggingface-token",
    "Hugging Face access tokens (hf_…) and organisation API tokens (api_org_…).",
    r"(?<![A-Za-z0-9_])(?P<value>(?:hf_|api_org_)[A-Za-z0-9]{30,256}+)",
    ("hf_", "api_org_"),
    (
        "HF_TOKEN=«hf_f5TNS05kOY2oNzN2m1ElKncz8HkywhjpU0»",
        "token: «hf_f5TNS05kOY2oNzN2m1ElKncz8HkywhjpU0»",
    ),
    ("hf_hub_cache=/var/cache/hf", "HF_HOME=/data/hf"),
)

DIGITALOCEAN_TOKEN = _rule(
    "digitalocean-token",
    "DigitalOcean personal, OAuth and refresh tokens (dop_v1_, doo_v1_, dor_v1_ + 64 hex).",
    r"(?<![A-Za-z0-9_])(?P<value>do[opr]_v1_[a-f0-9]{64})",
    ("dop_v1_", "doo_v1_", "dor_v1_"),
    (
        "DIGITALOCEAN_TOKEN=«dop_v1_611a3ce9d97dcbee500fe7ee5fc324bdb2e1142a21c402364f9572b85a8e48f6»",
    ),
    ("dop_v1_ prefix",),
)

SHOPIFY_TOKEN = _rule(
    "shopify-token",
    "Shopify access tokens and shared secrets (shpat_, shpca_, shppa_, shpss_ + 32 hex).",
    r"(?<![A-Za-z0-9_])(?P<value>shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32})",
    ("shpat_", "shpca_", "shppa_", "shpss_"),
    (
        "X-Shopify-Access-Token: «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»",
        "SHOPIFY_SECRET=«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»",
    ),
    ("shpat_ prefix",),
)

DOPPLER_TOKEN = _rule(
    "doppler-token",
    "Doppler tokens (dp.pt., dp.st., dp.sa., dp.ct., dp.scim., dp.audit.).",
    r"(?<![A-Za-z0-9_.])(?P<value>dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,64}+)",
    ("dp.pt.", "dp.st.", "dp.sa.", "dp.ct.", "dp.scim.", "dp.audit."),
    ("DOPPLER_TOKEN=«dp.st.kia7ZpTjCgeOj3QYrzZq9adP0J5wMPLCM7HUFpk5acd»",),
    ("dp.st.short", "bdp.pt.kia7ZpTjCgeOj3QYrzZq9adP0J5wMPLCM7HUFpk5acd"),
)

VAULT_TOKEN = _rule(
    "vault-token",
    "HashiCorp Vault service, batch and recovery tokens (hvs., hvb., hvr.).",
    r"(?<![A-Za-z0-9_.])(?P<value>hv[sbr]\.[A-Za-z0-9_-]{20,1024}+)",
    ("hvs.", "hvb.", "hvr."),
    (
        "VAULT_TOKEN=«hvs.37k5wCnHDepQHgI3HLBkbvHEzuPyXQEW88ad3DNBYjvsedonuSsddfrfifiUziXnF»",
        "vault login «hvs.2sNVbYAbBHXgwETdIKnT30fK»",
    ),
    ("hvs. is the prefix", "archvs.2sNVbYAbBHXgwETdIKnT30fK"),
)

VAULT_LEGACY_TOKEN = _rule(
    "vault-legacy-token",
    "Pre-1.10 Vault tokens (s. + 24 characters), only within 40 characters after 'vault'.",
    r"(?i:vault)[A-Za-z0-9_ .:=\"'-]{0,40}?(?<![A-Za-z0-9_.])"
    r"(?P<value>s\.[A-Za-z0-9]{24})(?![A-Za-z0-9])",
    ("vault",),
    (
        "VAULT_TOKEN=«s.0skBaHmsWWdawFgFSY0l9FLw»",
        "vault login «s.0skBaHmsWWdawFgFSY0l9FLw»",
        '"vault_token": "«s.0skBaHmsWWdawFgFSY0l9FLw»"',
    ),
    ("vault status: sealed", "s.0skBaHmsWWdawFgFSY0l9FLw without context"),
)

DATADOG_KEY = _rule(
    "datadog-key",
    "Datadog API (32 hex) and application (40 hex) keys next to a datadog/dd api/app key name.",
    r"(?i)(?<![a-z0-9])(?:datadog|dd)[a-z0-9_.-]{0,32}?(?:api|app|application)[_.-]?key"
    r"[a-z0-9_.-]{0,16}\\?[\"']?[ \t]*(?::|=>|=)[ \t]*\\?[\"']?"
    r"(?P<value>[a-f0-9]{32}(?:[a-f0-9]{8})?)(?![a-z0-9])",
    ("datadog", "dd_", "dd-", "dd."),
    (
        "DD_API_KEY=«85967f532f3ab3cc2d0b698d5c7e41ba»",
        "datadog.app_key: «4ea5ee874ae7689447ab57a683536c4499d86338»",
        "DD-APPLICATION-KEY: «4ea5ee874ae7689447ab57a683536c4499d86338»",
    ),
    ("DD_API_KEY_FILE=/run/secrets/dd", "dd_site: datadoghq.eu"),
)

ATLASSIAN_TOKEN = _rule(
    "atlassian-api-token",
    "Atlassian (Jira, Confluence, Bitbucket) API tokens (ATATT3…).",
    r"(?<![A-Za-z0-9_-])(?P<value>ATATT3[A-Za-z0-9_=-]{150,256}+)",
    ("atatt3",),
    (
        "JIRA_API_TOKEN=«ATATT3xFfGF0AX7ebZ3CL7csGZaF31DDxp63OHm1FZuG296c0xPbX_neGBuzSm6A8cVR06AxYpThGJWZhbj"
        "11THnCMZCY7Bvqiy8CsT07Lq8TDIWG2x9aJTFMP9_2kUtMXhkPrSbbAjLGmsDx5StAZvlMz-Bk4opH1Dr8-h97s_F-vauP7-L7V"
        "=dd25b001»",
    ),
    ("ATATT3 prefix",),
)

GRAFANA_TOKEN = _rule(
    "grafana-token",
    "Grafana Cloud API tokens (glc_) and service-account tokens (glsa_).",
    r"(?<![A-Za-z0-9_])(?P<value>glc_[A-Za-z0-9+/]{32,1024}+={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})",
    ("glc_", "glsa_"),
    (
        "GRAFANA_TOKEN=«glc_RV7vZgGEFW5jcnTAOivg3QxvEXHJX6nsBvBqJd0ssw0FzvGr3GwnPFYhvmuT==»",
        "token: «glsa_tiLOfYczUJ4zIKdztgacm06EMXQdYG6I_c4261e53»",
    ),
    ("glc_ prefix", "glsa_short_c4261e53"),
)

NEWRELIC_KEY = _rule(
    "newrelic-key",
    "New Relic user, insert and browser keys (NRAK-, NRII-, NRJS-, NRAA-).",
    r"(?<![A-Za-z0-9_-])(?P<value>NR(?:AK|II|JS|AA|IQ)-[A-Za-z0-9_-]{19,64}+)",
    ("nrak-", "nrii-", "nrjs-", "nraa-", "nriq-"),
    ("NEW_RELIC_API_KEY=«NRAK-LC0GAXIT9QTL0CUB1D57CH0Z2EA»",),
    ("NRAK- prefix",),
)

DATABRICKS_TOKEN = _rule(
    "databricks-token",
    "Databricks personal access tokens (dapi + 32 hex).",
    r"(?<![A-Za-z0-9_])(?P<value>dapi[a-f0-9]{32}(?:-[0-9])?)(?![A-Za-z0-9])",
    ("dapi",),
    ("DATABRICKS_TOKEN=«dapic4fd32f640d0032634f087e51b429fe8»",),
    ("rapid dapi=1", "dapic4fd32 short"),
)

AGE_SECRET_KEY = _rule(
    "age-secret-key",
    "age file-encryption identities (AGE-SECRET-KEY-1…).",
    r"(?P<value>AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58})",
    ("age-secret-key-1",),
    ("«AGE-SECRET-KEY-1RZQRQ9CNN2LR5HU72F8H267CU34J3R4QFNM0CCCWUJQ5S3M2ZJFF3LK9LC»",),
    ("# public key: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",),
)

MISC_SAAS_TOKEN = _rule(
    "saas-token",
    "Other prefixed SaaS tokens: Sentry, Linear, Postman, Pulumi, Supabase, Heroku, Square,"
    " NuGet, RubyGems, Terraform Cloud.",
    r"(?<![A-Za-z0-9_-])(?P<value>sntry[su]_[A-Za-z0-9+/=_-]{40,512}+"
    r"|lin_api_[A-Za-z0-9]{40}|PMAK-[a-f0-9]{24}-[a-f0-9]{34}|pul-[a-f0-9]{40}"
    r"|sbp_[a-f0-9]{40}|HRKU-[A-Za-z0-9_-]{60}|sq0(?:atp|csp)-[A-Za-z0-9_-]{22,64}+"
    r"|oy2[a-z0-9]{43}|rubygems_[a-f0-9]{48}"
    r"|[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70})",
    (
        "sntry",
        "lin_api_",
        "pmak-",
        "pul-",
        "sbp_",
        "hrku-",
        "sq0atp-",
        "sq0csp-",
        "oy2",
        "rubygems_",
        "atlasv1",
    ),
    (
        "SENTRY_AUTH_TOKEN=«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»",
        "LINEAR_API_KEY=«lin_api_YGTVPWEdgjuWa8mRVtLLCWPgEuxqyhxEykCpZj6R»",
        "postman_api_key: «PMAK-0e61572b4e3c02eaa7f3b4a7-15e4e48dd74089a58f3aef3416f9386bd8»",
        "PULUMI_ACCESS_TOKEN=«pul-773c9d51940ea4e095bd1d6854575622f8564696»",
        "SUPABASE_ACCESS_TOKEN=«sbp_4683f84d30d3fc4d83cee9b9bcca0fce9594dc72»",
        "credentials app.terraform.io { token = "
        '"«aeSUHA1U6dHZwv.atlasv1.K-lb09rIFxUeuVaT5jpTFPWhLn-5drcFlCxvnNGdcmyHc7E4n'
        'SmwfIp7-JoppZ»" }',
        "SQUARE_TOKEN=«sq0atp-TmTPoeFGTy5c4oc_ojHxtL»",
    ),
    ("pul-request", "lin_api_short", "sbp_ prefix", "gems: rubygems_mirror"),
)

TELEGRAM_BOT_TOKEN = _rule(
    "telegram-bot-token",
    "Telegram bot tokens (bot id, ':', 35 characters starting with A).",
    r"(?P<value>[0-9]{5,16}:AA[A-Za-z0-9_-]{33})(?![A-Za-z0-9_-])",
    (":aa",),
    (
        "TELEGRAM_TOKEN=«7484896886:AAX7TfS5biDm0VZty1_Z4RlvUOUjNwoLR1u»",
        "POST https://api.telegram.org/bot«7484896886:AAX7TfS5biDm0VZty1_Z4RlvUOUjNwoLR1u»/sendMessage",
    ),
    ("12:30:AM", "port 3000:Accept"),
    gate=r"[0-9]{5}:aa[a-z0-9_\-]{33}",
)

DISCORD_WEBHOOK = _rule(
    "discord-webhook",
    "Discord webhook URLs: the token after the webhook id.",
    r"(?i)discord(?:app)?\.com/api/webhooks/[0-9]{5,30}/(?P<value>[A-Za-z0-9_-]{20,256}+)",
    ("discord",),
    (
        "url: https://discord.com/api/webhooks/620669980605563569/"
        "«PZgPsTF2bUnxiP3zcCr1Y6ffeIIemGpb3EfKoNSvphIk7s4pqL0KJFlK6CXzU6M98NdF»",
    ),
    ("https://discord.com/api/webhooks/", "discord.com/api/webhooks/123456/short"),
)

# --- JSON Web Tokens -----------------------------------------------------------------

_B64URL = "[A-Za-z0-9_-]"
JWT = _rule(
    "jwt",
    "JSON Web Tokens: eyJ….eyJ….signature (also unsigned, two-part) and five-part JWE.",
    rf"(?P<value>eyJ(?<![A-Za-z0-9_-]eyJ){_B64URL}{{1,4096}}+\."
    rf"(?:eyJ{_B64URL}{{1,65536}}+(?:\.{_B64URL}{{0,8192}}+)?"
    rf"|{_B64URL}{{0,4096}}+\.{_B64URL}{{1,4096}}+\.{_B64URL}{{1,65536}}+\.{_B64URL}{{0,4096}}+))",
    ("eyj",),
    (
        "2026-11-01T08:00:00Z INFO token=«eyJA9a9SkpXz9w3QlY7Zkuv.eyJqdt7s8Stqcbnr3yBdGBLEPH1q"
        "hT61qtc4xatws8"
        "phP9nhFyJfm.5di4PzJ59FHz5r1pY4OjE2jBMptUsGr7CmY_uCu3ZR1»",
        '{"id_token": "«eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.»"}',
        "unsigned «eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ» seen",
        "jwe «eyJhbGciOiJSU0EtT0FFUCJ9.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTC"
        "VJRgckCL9kiMT03JGe"
        ".48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji.XFBoMYUZodetZdvTiFvSkQ»",
    ),
    (
        ".dockerconfigjson: eyJhdXRocyI6eyJyZWdpc3RyeSI6e319fQ==",
        "header eyJhbGciOiJIUzI1NiJ9 alone",
        "keyJx.eyJy not at a word start",
    ),
)

# --- Headers -------------------------------------------------------------------------

#: A header name's end: optional closing quote (JSON, dicts, `-H 'Name: value'`), ':'.
_HEADER_SEP = r"\\?[\"']?[ \t]*:[ \t]*\\?[\"']?"
#: One auth parameter: name=value or name="value" (also with JSON-escaped quotes).
_AUTH_PARAM = r"[A-Za-z][A-Za-z0-9_-]{0,40}=(?:\\?\"[^\"\\\r\n]{0,1024}\\?\"|[^\s,\"'\\]{0,4096}+)"
_AUTH_WORD = r"[^\s\"'\\,;$][^\s\"'\\,;]{0,8191}+"
#: A scheme word (`Bearer`, `Basic`, `Digest`, `AWS4-HMAC-SHA256`): letters and dashes.
_AUTH_SCHEME = (
    r"(?:[A-Za-z][A-Za-z-]{0,23}|AWS4-HMAC-SHA256|SCRAM-SHA-(?:1|256)|HMAC-SHA[0-9]{1,3})"
)

AUTHORIZATION_HEADER = _rule(
    "authorization-header",
    "Authorization / Proxy-Authorization header credentials; the scheme word stays.",
    rf"(?i)(?<![A-Za-z0-9_-])(?:[A-Za-z0-9]{{1,20}}-){{0,3}}authorization{_HEADER_SEP}"
    rf"(?>(?:{_AUTH_SCHEME}[ \t]{{1,8}}(?=\S))?)"
    rf"(?P<value>(?:{_AUTH_PARAM}|{_AUTH_WORD})(?:[ \t]*,[ \t]*{_AUTH_PARAM}){{0,32}})",
    ("authorization",),
    (
        "INFO request id=3f0e2d1c-9a8b-4c7d Authorization: Bearer «eyJA9a9Skp.xyz»",
        "curl -H 'Authorization: Basic «dXNlcjpwYXNz»' https://api.example.com",
        '{"headers": {"Authorization": "Bearer «gAAAAABl-token-value»", "Accept": "*/*"}}',
        "Proxy-Authorization: «c2VjcmV0LXRva2Vu»",
        "Authorization: AWS4-HMAC-SHA256 «Credential=AKID/20261101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe»",
        'authorization: Digest «username="bob", realm="api", nonce="dcd98b7102dd2f0e", '
        'response="6629fae49393a05397450978507c4ef1"»',
        "{'Authorization': 'token «ghx_notAknownPrefixButSecret»'}",
    ),
    (
        "Authorization failed for user bob",
        'curl -H "Authorization: Bearer $TOKEN" https://api.example.com',
        "authorization_code grant enabled",
        "Authorization: Bearer [REDACTED:jwt]",
    ),
    "authorization",
)

#: Set-Cookie attributes: what the server says about the cookie, not its value.
COOKIE_ATTRIBUTES = frozenset(
    [
        "path",
        "domain",
        "expires",
        "max-age",
        "secure",
        "httponly",
        "samesite",
        "partitioned",
        "priority",
        "version",
        "comment",
    ]
)
_COOKIE_HEADER = re.compile(r"(?i)(?<![A-Za-z0-9_-])(set-)?cookie" + _HEADER_SEP)
_COOKIE_VALUE = re.compile(r"[^\"'\\\r\n]{0,16384}+")
_COOKIE_PAIR = re.compile(r"[ \t]*(?P<name>[^=;]{0,256}+)(?:=[ \t]*(?P<value>[^;]{0,16384}+))?")


#: A cookie value that is a short word (`theme=dark`, `lang=en`): a preference, never a
#: session. Anything else (ids, tokens, base64, numbers with letters) goes.
_PREFERENCE = re.compile(r"[A-Za-z]{1,12}")


def _preference(value: str) -> bool:
    """Whether a cookie value is a plain short word, which no session id is."""
    return _PREFERENCE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class CookieHeaderRule(Stateless):
    """Cookie / Set-Cookie headers: each cookie's value goes; names and attributes stay."""

    name: str = "cookie-header"
    description: str = (
        "Cookie and Set-Cookie header values (cookie names and Path/Expires/HttpOnly stay)."
    )
    label: str = "cookie"
    hints: tuple[str, ...] = ("cookie",)
    #: Every line with a hit has the header's name and its colon (`_COOKIE_HEADER`).
    gate: str = r"cookie\\?[\"']?[ \t]*:"
    examples: tuple[str, ...] = (
        "Cookie: session=«9f2b7c1e8d4a6f30»; csrftoken=«Xk2m9Qp7Lw4z»",
        "Set-Cookie: sid=«s%3AaSM9nDthTiB64fN3.mKh6U3wkxV1v»; Path=/; HttpOnly; "
        "Expires=Wed, 21 Oct 2026 07:28:00 GMT",
        "curl -H 'Cookie: JSESSIONID=«A1B2C3D4E5F6»' https://app.internal/",
        '{"Cookie": "auth=«ZWVRa0qhpxGVH8wUFc0M»; theme=dark", "Accept": "*/*"}',
        "set-cookie: «opaque-value-without-name»; Secure",
    )
    benign: tuple[str, ...] = (
        "Cookie: session=[REDACTED:cookie]",
        "cookies disabled for this site",
        "Set-Cookie header missing",
        "cookie: expired for user bob",
    )

    def scan(self, line: str) -> list[Hit]:
        """A hit per cookie value of each Cookie / Set-Cookie header in `line`."""
        hits: list[Hit] = []
        pos = 0
        while (header := _COOKIE_HEADER.search(line, pos)) is not None:
            region = _COOKIE_VALUE.match(line, header.end())
            end = region.end() if region is not None else header.end()
            self._pairs(line, header.end(), end, bool(header.group(1)), hits)
            pos = max(end, header.end())  # a header inside this one's value is its value
        return hits

    def _pairs(self, line: str, start: int, end: int, is_set: bool, hits: list[Hit]) -> None:
        """Add a hit for each cookie value in line[start:end] (`;`-separated pairs)."""
        first = True
        for piece in re.finditer(r"[^;]{1,16384}+", line[start:end]):
            pair = _COOKIE_PAIR.match(piece.group())
            name = pair.group("name").strip() if pair else ""
            attribute = name.lower() in COOKIE_ATTRIBUTES and not (first and is_set)
            if pair is None or attribute:
                first = False
                continue
            first = False
            if pair.group("value") is not None:
                s, e = pair.span("value")
            elif name and not any(c in name for c in " \t{}"):
                s, e = pair.span("name")  # a value without a name
            else:
                continue
            value = piece.group()[s:e].rstrip()
            if value and not is_redacted(value) and not _preference(value):
                at = start + piece.start() + s
                hits.append(Hit(at, at + len(value), self.name, self.label))


API_KEY_HEADER = _rule(
    "api-key-header",
    "API key and token headers: X-…-Key, X-…-Token, X-Api-Key, X-Vault-Token, Private-Token.",
    r"(?i)(?<![A-Za-z0-9_-])(?:x-(?:[a-z0-9]{1,24}-){0,4}"
    r"(?:api-?key|key|token|secret|auth|password|session|credentials?)"
    r"|private-token|api-?key|dd-(?:api|application)-key|ocp-apim-subscription-key)"
    rf"{_HEADER_SEP}(?P<value>[^\s\"'\\,;$<>][^\s\"'\\,;<>]{{0,8191}}+)",
    ("x-", "private-token", "apikey", "api-key", "dd-api", "dd-application", "ocp-apim"),
    (
        "curl -H 'X-Api-Key: «d0c621de49f145fda9988c79fc35526f»' https://api.example.com",
        "X-Vault-Token: «hvs.CAESIJ3kF8x»",
        '{"X-Amz-Security-Token": "«IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJH»"}',
        "PRIVATE-TOKEN: «glpat-9nhFyJfm5di4PzJ59FHz»",
        "x-goog-api-key: «AIzawtDDb_xHKas1VOqg6YYZYn9ZhyiA4uoRgna»",
        "Ocp-Apim-Subscription-Key: «1f0e2d3c4b5a69788796a5b4c3d2e1f0»",
    ),
    (
        "X-Content-Type-Options: nosniff",
        "X-Request-Id: 3f0e2d1c-9a8b-4c7d-8e6f-5a4b3c2d1e0f",
        "X-Api-Key: $API_KEY",
        "X-Token-Expires: 3600",
    ),
)

# --- URLs and connection strings -----------------------------------------------------

URL_PASSWORD = _rule(
    "url-password",
    "The password in URL userinfo: scheme://user:password@host (the user stays).",
    r"://(?<=[A-Za-z0-9]://)[^/\s:@\"'\\<>]{0,256}:"
    r"(?P<value>[^/\s\"'\\<>?#]{1,256})@",
    ("://",),
    (
        "2026-11-01T08:00:01Z WARN fetching https://admin:«mwufUxbvJDCTbyvH»@registry.internal/v2/",
        "psql postgresql://ro:«O7jprBGumXxY»@db.internal/events",
        "jdbc:mysql://app:«s3cr3t»@db:3306/orders?useSSL=true",
        "REDIS_URL=redis://:«aSM9nDthTiB64fN3»@cache:6379/0",
        'mongo "mongodb+srv://svc:«p@ss:w0rd»@cluster0.abcd.mongodb.net/db"',
        "amqp://guest:«mKh6U3wkxV1v»@rabbit:5672/%2f",
    ),
    (
        "GET http://localhost:8080/users/@me",
        "ssh://git@github.com:22/org/repo.git",
        "https://user@example.com/path",
        "postgres://app:[REDACTED:url-password]@db/x",
    ),
)

ORACLE_PASSWORD = _rule(
    "oracle-password",
    "Oracle user/password@db credentials in JDBC thin URLs and sqlplus command lines.",
    r"(?i)(?:jdbc:oracle:[a-z]{1,10}:|sqlplus[ \t]{1,8}(?:-[a-z]{1,8}[ \t]{1,8}){0,3})"
    r"[A-Za-z0-9_$#.]{1,128}/(?P<value>[^@\s\"'/]{1,256})(?=@|\s|$)",
    ("jdbc:oracle", "sqlplus"),
    (
        "url=jdbc:oracle:thin:scott/«tiger42»@db.internal:1521/ORCL",
        "sqlplus -s system/«Manager1»@//db:1521/XEPDB1",
    ),
    ("jdbc:oracle:thin:@db.internal:1521/ORCL", "sqlplus /nolog"),
    "url-password",
)

QUERY_SECRET = _rule(
    "query-secret",
    "Secret URL query parameters: token, password, api_key, sig, X-Amz-Signature, … "
    "(not OAuth code/state: short-lived and single-use).",
    r"(?i)[?&;](?:password|passwd|pwd|pass|passphrase|secret|client_?secret"
    r"|(?:access|refresh|id|auth|session|oauth|private)?[_-]?token|token"
    r"|api[_-]?key|apikey|hapikey|key(?==[^&#\s\"'<>\\]{16})|sig|signature|auth|sessionid|jwt"
    r"|oauth_signature"
    r"|x-amz-(?:signature|credential|security-token)|x-goog-(?:signature|credential))"
    r"=(?P<value>[^&#\s\"'<>\\]{1,4096}+)",
    ("pass", "pwd", "token", "key", "secret", "sig", "credential", "auth", "session", "jwt"),
    (
        "GET https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
        "«AKIAUJZDEGXDNCF32EPF%2F20261101%2Feu-central-1%2Fs3%2Faws4_request»&X-Amz-Expires=900"
        "&X-Amz-Signature=«3dfc967a64cb14028d512c9791e558e08baa7196b50ac2f86702824c1c099724»",
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&se=2026-11-02&sp=r"
        "&sig=«2uMksDur4Zlf49yBVae2sKjh1Ri4bwvWLa4Sz8kP62t%3D»",
        '"callback": "https://app.example.com/cb?access_token=«mKh6U3wkxV1v»&expires_in=3600"',
        "POST /login?user=bob&password=«hunter2» 200",
        "ws://stream.internal/feed?apiKey=«d0c621de49f145fda9988c79fc35526f»#top",
        "GET https://maps.example.com/v1/geo?key=«k9Fq2ZxT7bLw3NcP8sVd»&q=berlin",
        "https://storage.googleapis.com/b/o?X-Goog-Signature=«a1b2c3d4e5f6»&X-Goog-Date=20261101",
    ),
    (
        "https://example.com/cb?code=4%2F0AX4XfWh&state=af0ifjsldkj",
        "object sha256=923732881584d8c4fa2815d2802827283e0ad84173581569969e58b081006f7e",
        "https://b.s3.amazonaws.com/k?X-Amz-Expires=900&X-Amz-SignedHeaders=host",
        "GET /items?sort_key=name&page=2",
        "GET /orders?key=order-4711&page=2",  # a short `key` is a lookup key, not an API key
        "?token=[REDACTED:query-secret]",
    ),
    gate=(
        r"[?&;](?:password|passwd|pwd|pass|passphrase|secret|client_?secret"
        r"|(?:access|refresh|id|auth|session|oauth|private)?[_-]?token|token"
        r"|api[_-]?key|apikey|hapikey|sig|signature|auth|sessionid|jwt|oauth_signature"
        r"|x-amz-(?:signature|credential|security-token)|x-goog-(?:signature|credential))="
        r"|[?&;]key=[^&#\s\"'<>\\]{16}"
    ),
)

CONNECTION_STRING_PASSWORD = _rule(
    "connection-string-password",
    "Password= / Pwd= in ODBC, ADO.NET and JDBC-style connection strings (to ';', or {braced}).",
    r"(?i)(?<![A-Za-z0-9_.-])(?:password|pwd|user[ _]?password)[ \t]*=[ \t]*(?!/)"
    r"(?:(?P<brace>\{)|(?P<sq>'))?"
    r"(?P<value>(?(brace)[^}\r\n]{0,256}+(?:\}\}[^}\r\n]{0,256}+){0,8}+"
    r"|(?(sq)[^'\r\n]{1,256}+|(?:[^;\s\"'{][^;\r\n\"']{0,255}+(?=;)|[^;\s\"'{&]{1,256}+))))"
    r"(?(brace)\}|(?(sq)'))",
    ("password", "pwd"),
    (
        "Server=db.internal;Database=orders;User Id=app;Password=«my pass word»;",
        "Driver={ODBC Driver 18 for SQL Server};Server=tcp:db,1433;Uid=app;Pwd={«pa;ss}}word»};",
        '"Default": "Host=pg;Username=app;Password=«ZWVRa0qhpxGVH8wUFc0M»;Pooling=true"',
        "Data Source=db;User ID=sa;Password='«it is; secret»'",
        "user=bob password=«hunter2» host=db",
    ),
    (
        "PWD=/home/app",
        "PasswordAuthentication=no",
        "Password=;Pooling=true",
        "Server=db;Password=[REDACTED:connection-string];",
    ),
    "connection-string",
    gate=r"(?:password|pwd)[ \t]*=[ \t]*[^/; \t\r\n\x00\"]",
)

DOCKER_AUTH = _rule(
    "docker-auth",
    'Docker registry credentials: "auth", "identitytoken", "registrytoken" in docker'
    " config JSON, and Kubernetes .dockerconfigjson / .dockercfg data.",
    r"(?i)(?:\\?\"(?:auth|identitytoken|registrytoken)\\?\"[ \t]*:[ \t]*\\?\""
    r"|\.docker(?:configjson|cfg)\\?[\"']?[ \t]*:[ \t]*\\?[\"']?)"
    r"(?P<value>[A-Za-z0-9+/=_.-]{8,65536}+)",
    ('"auth', "identitytoken", "registrytoken", "dockerconfigjson", "dockercfg"),
    (
        '{"auths": {"registry.internal": {"auth": "«YWRtaW46bXd1ZlV4YnZKRENUYnl2SA==»"}}}',
        '    "identitytoken": "«eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9»",',
        "  .dockerconfigjson: «eyJhdXRocyI6eyJyZWdpc3RyeSI6eyJhdXRoIjoiWVdSdGFXNDYifX19»",
        '{\\"auths\\":{\\"r.io\\":{\\"auth\\":\\"«dXNlcjpwYXNzd29yZA==»\\"}}}',
    ),
    ('{"auth": "none"}', '"auth": {"type": "basic"}', '"auth": "[REDACTED:docker-auth]"'),
    gate=r"\"(?:auth|identitytoken|registrytoken)\\?\"[ \t]*:|dockerconfigjson|dockercfg",
)

# --- Private keys --------------------------------------------------------------------

_PEM_BEGIN = re.compile(r"-{4,5} ?BEGIN (?:[A-Z0-9]{1,16} ){0,4}PRIVATE KEY(?: BLOCK)? ?-{4,5}")
_PEM_END = re.compile(r"-{4,5} ?END (?:[A-Z0-9]{1,16} ){0,4}PRIVATE KEY(?: BLOCK)? ?-{4,5}")
#: An RFC 1421 / OpenPGP armor header inside a block (`Proc-Type: 4,ENCRYPTED`): not key
#: material (base64 has no ':').
_PEM_HEADER = re.compile(r"[ \t\"']{0,64}[A-Za-z][A-Za-z0-9-]{0,40}: ")
_PUTTY_PRIVATE = re.compile(r"[ \t]{0,64}Private-Lines:[ \t]{0,8}([0-9]{1,5})")
_CLOSING_QUOTE = re.compile(r"(?<!\\)[\"']")
#: Characters that are structure around key material, never part of it.
_STRUCTURE = " \t\"'`,;()"


def _trim(line: str, start: int, end: int) -> tuple[int, int]:
    """The span of line[start:end] without the structure around it (quotes, `\\n`, `,`)."""
    while start < end:
        if line[start] in _STRUCTURE:
            start += 1
        elif line[start] == "\\":
            start += 1
            while start < end and line[start] == "\\":
                start += 1
            if start < end and line[start] in "nrt":
                start += 1
        else:
            break
    while end > start:
        c = line[end - 1]
        if c in _STRUCTURE or c == "\\":
            end -= 1
        elif c in "nrt" and end - 2 >= start and line[end - 2] == "\\":
            end -= 2
        elif c == "+" and end - 2 >= start and line[end - 2] in " \t":
            end -= 1  # "…\n" + (string concatenation)
        else:
            break
    return start, end


class _PrivateKeyScanner:
    """Scans one text for private key material; `open` while inside a block."""

    def __init__(self, rule: PrivateKeyRule) -> None:
        self.name = rule.name
        self.hints = rule.hints
        self._label = rule.label
        self._inside = False
        self._putty_lines = 0

    @property
    def open(self) -> bool:
        """Whether the next line is still inside a private key block."""
        return self._inside or self._putty_lines > 0

    def scan(self, line: str) -> list[Hit]:
        """The key material in `line`: body lines of blocks, and PuTTY private lines."""
        hits: list[Hit] = []
        if self._putty_lines > 0:
            self._putty_lines -= 1
            self._add(line, 0, len(line), hits)
            return hits
        pos = 0
        if self._inside:
            end = _PEM_END.search(line)
            if end is None:
                if not _PEM_HEADER.match(line):
                    self._add(line, 0, len(line), hits)
                return hits
            self._add(line, 0, end.start(), hits)
            self._inside = False
            pos = end.end()
        self._blocks(line, pos, hits)
        putty = _PUTTY_PRIVATE.match(line)
        if putty is not None:
            self._putty_lines = int(putty.group(1))
        return hits

    def _blocks(self, line: str, pos: int, hits: list[Hit]) -> None:
        """Hits for blocks that begin in line[pos:]; opens one that does not end here."""
        while (begin := _PEM_BEGIN.search(line, pos)) is not None:
            end = _PEM_END.search(line, begin.end())
            if end is not None:  # one line: "-----BEGIN …-----\nMII…\n-----END …-----"
                self._add(line, begin.end(), end.start(), hits)
                pos = end.end()
                continue
            quote = _CLOSING_QUOTE.search(line, begin.end())
            stop = quote.start() if quote else len(line)
            start, stop = _trim(line, begin.end(), stop)
            if quote is not None and start < stop:  # a JSON string cut short: it ends here
                self._add(line, start, stop, hits)
                pos = quote.end()
                continue
            self._add(line, start, stop, hits)
            self._inside = True
            return

    def _add(self, line: str, start: int, end: int, hits: list[Hit]) -> None:
        """A hit for line[start:end] without its structure, unless empty or redacted."""
        start, end = _trim(line, start, end)
        if start < end and not is_redacted(line[start:end]):
            hits.append(Hit(start, end, self.name, self._label))


@dataclass(frozen=True, slots=True)
class PrivateKeyRule:
    """PEM private key blocks (RSA, EC, DSA, OpenSSH, PKCS#8, ENCRYPTED, PGP, SSH2) and PuTTY."""

    name: str = "private-key"
    description: str = (
        "Private key material: the body of -----BEGIN … PRIVATE KEY----- blocks (also one-line"
        " in JSON strings and YAML block scalars; an unterminated block runs to the end) and"
        " PuTTY Private-Lines. Public keys and certificates stay."
    )
    label: str = "private-key"
    hints: tuple[str, ...] = ("private key", "private-lines")
    examples: tuple[str, ...] = (
        '"private_key": "-----BEGIN PRIVATE KEY-----\\n«MIIEvQIBADANBgkqhkiG9w0BAQEFAASC'
        "BKcwggSjAgEAAoIBAQC7\\nqOS3yOGYY8NTuPx+Jki5nqQlC9PVt+SDoG27s8+BI+iGwIGR1dDNBN==»"
        '\\n-----END PRIVATE KEY-----\\n",',
        "KEY=-----BEGIN RSA PRIVATE KEY----- «MIIEowIBAAKCAQEAsaQ6FQcKIqNc9Rpg1XOODKAEoIiu"
        " PE9hDPLrBdnd3xB7+5IwzT/oV73kESnUT0YH3==» -----END RSA PRIVATE KEY-----",
        '{"key": "-----BEGIN EC PRIVATE KEY-----\\n«MHcCAQEEIK6/saQ6FQcKIqNc9Rpg1XOODK»"}',
        "-----BEGIN OPENSSH PRIVATE KEY-----«b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ»"
        "-----END OPENSSH PRIVATE KEY-----",
    )
    benign: tuple[str, ...] = (
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY----- MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A -----END PUBLIC KEY-----",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI4bV3AyAVHnyrvWdFrK9x bob@host",
        "the private key is stored in /etc/iggy/key.pem",
        '"key": "-----BEGIN PRIVATE KEY-----\\n[REDACTED:private-key]\\n-----END PRIVATE KEY-----"',
    )

    def scanner(self) -> _PrivateKeyScanner:
        """A fresh scanner: it remembers whether it is inside a block."""
        return _PrivateKeyScanner(self)


PRIVATE_KEY = PrivateKeyRule()
COOKIE_HEADER = CookieHeaderRule()

#: Every token rule, one per kind of token; the leak scan runs exactly these.
TOKEN_RULES: tuple[Rule, ...] = (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    GOOGLE_API_KEY,
    GOOGLE_OAUTH_TOKEN,
    AZURE_STORAGE_KEY,
    AZURE_AD_CLIENT_SECRET,
    ALIBABA_ACCESS_KEY_ID,
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    SLACK_TOKEN,
    SLACK_WEBHOOK,
    STRIPE_KEY,
    OPENAI_API_KEY,
    ANTHROPIC_API_KEY,
    NPM_TOKEN,
    PYPI_TOKEN,
    DOCKERHUB_TOKEN,
    SENDGRID_KEY,
    TWILIO_API_KEY,
    MAILGUN_KEY,
    MAILCHIMP_KEY,
    HUGGINGFACE_TOKEN,
    DIGITALOCEAN_TOKEN,
    SHOPIFY_TOKEN,
    DOPPLER_TOKEN,
    VAULT_TOKEN,
    VAULT_LEGACY_TOKEN,
    DATADOG_KEY,
    ATLASSIAN_TOKEN,
    GRAFANA_TOKEN,
    NEWRELIC_KEY,
    DATABRICKS_TOKEN,
    AGE_SECRET_KEY,
    MISC_SAAS_TOKEN,
    TELEGRAM_BOT_TOKEN,
    DISCORD_WEBHOOK,
    JWT,
    PRIVATE_KEY,
    AUTHORIZATION_HEADER,
    COOKIE_HEADER,
    API_KEY_HEADER,
    URL_PASSWORD,
    ORACLE_PASSWORD,
    QUERY_SECRET,
    CONNECTION_STRING_PASSWORD,
    DOCKER_AUTH,
)
