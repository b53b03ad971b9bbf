// report.html's script, inlined at render time and allowed by hash in the page's CSP.
// Plain ES2020, no library. The page is complete without it (cards are rendered on the
// server); this adds search, filter chips, sortable tables, permalinks, copy buttons,
// expand/collapse and the `/` and Escape keys. It never fetches anything.
"use strict";
(() => {
  const doc = document;
  doc.documentElement.classList.remove("no-js");

  // Raw viewers: the page holds each head as plain text, line for line as stored; here
  // every line becomes a <span class="line"> (numbered by CSS), error lines marked.
  for (const pre of doc.querySelectorAll("pre.raw")) {
    const errors = new Set((pre.dataset.errorLines || "").split(" ").filter(Boolean).map(Number));
    const text = pre.textContent.replace(/\n$/, "");
    const lines = doc.createDocumentFragment();
    text.split("\n").forEach((line, index) => {
      const span = doc.createElement("span");
      span.className = errors.has(index + 1) ? "line error" : "line";
      span.textContent = line;
      lines.append(span);
    });
    pre.replaceChildren(lines);
  }

  const cards = Array.from(doc.querySelectorAll("article.check"));
  const search = doc.getElementById("search");
  const visibleCount = doc.getElementById("visible-count");
  const noMatch = doc.getElementById("no-match");
  const clearButton = doc.getElementById("clear-filters");
  const bodyOf = (card) => card.querySelector("details.check-body");

  // -- search text: what each card shows, and what the page's report data holds --------
  // Tables on the page are cut to a size budget ("300 of 1323 shown"), but #report-data
  // holds each check's summary, findings and data: a value cut from a table still finds
  // its card, which then says so. Where the data itself is cut (too large to embed, or a
  // list or string longer than the page keeps: render/embed.py), the search says what it
  // could not look at. Built once, on the first search (or focus of the box), lower-cased:
  // each keystroke after that is a few substring searches.
  let index = null;
  // The marks render/embed.py and render/budget.py leave where they cut the data.
  const DROPPED = "\u2026"; // the one key of a check's data left out of the page
  const CUT_MARK = /^\u2026 [\d,]+ more items: see report\.json$| more characters: the whole value is in report\.json\]$|^\[nested too deep to show: see report\.json\]$/;
  const MAX_DEPTH = 64;
  // Keys (for data) and values of `value`, as strings into `out`; true if cut anywhere.
  function flatten(value, keys, out, depth) {
    if (value === null || value === undefined) return false;
    if (typeof value !== "object") {
      const text = String(value);
      out.push(text);
      return typeof value === "string" && /report\.json\]?$/.test(text) && CUT_MARK.test(text);
    }
    if (depth > MAX_DEPTH) return true;
    let cut = false;
    if (Array.isArray(value)) {
      for (const item of value) cut = flatten(item, keys, out, depth + 1) || cut;
    } else {
      for (const key in value) {
        if (keys) out.push(key);
        cut = flatten(value[key], keys, out, depth + 1) || cut;
      }
    }
    return cut;
  }
  const dropped = (data) =>
    data !== null && typeof data === "object" && !Array.isArray(data) &&
    Object.keys(data).length === 1 && DROPPED in data;
  function buildIndex() {
    let report = null;
    try {
      report = JSON.parse(doc.getElementById("report-data").textContent);
    } catch (_) {
      report = null;
    }
    const checks = new Map();
    for (const check of report && Array.isArray(report.checks) ? report.checks : []) {
      if (!check || typeof check !== "object") continue;
      const id = String(check.id ?? "?");
      if (!checks.has(id)) checks.set(id, []);
      checks.get(id).push(check);
    }
    const raw = report && report.raw && typeof report.raw === "object" ? report.raw : {};
    const rawPaths = Object.keys(raw);
    const built = new Map();
    for (const card of cards) {
      const parts = [];
      let cut = false;
      for (const check of checks.get(card.id) || []) {
        flatten([check.title, check.summary, check.description], false, parts, 0);
        flatten(check.findings, false, parts, 0);
        cut = (dropped(check.data) || flatten(check.data, true, parts, 0)) || cut;
      }
      // Raw files cut or not shown, but commands.json: the card lists its commands.
      const prefix = `raw/${card.id}/`;
      const listed = card.querySelector("table.commands") !== null;
      const rawCut = rawPaths.filter(
        (path) =>
          path.startsWith(prefix) &&
          raw[path] &&
          raw[path].truncated &&
          !(listed && path === `${prefix}commands.json`),
      ).length;
      built.set(card, {
        page: card.textContent.toLowerCase(),
        data: parts.join("\n").toLowerCase(),
        cut,
        rawCut,
      });
    }
    return built;
  }
  const entryOf = (card) => {
    if (index === null) index = buildIndex();
    return index.get(card);
  };
  search.addEventListener("focus", () => setTimeout(() => entryOf(cards[0]), 0), { once: true });

  // The words of the search a card holds only in its report data, not on the page (null:
  // a word the card holds nowhere).
  function offPage(card, words) {
    const entry = entryOf(card);
    const missing = [];
    for (const word of words) {
      if (entry.page.includes(word)) continue;
      if (!entry.data.includes(word)) return null;
      missing.push(word);
    }
    return missing;
  }

  // A card that matches through data the page does not show says so, in its body.
  const notes = new Map();
  function noteIn(card, missing) {
    let note = notes.get(card);
    if (!missing.length) {
      if (note) note.hidden = true;
      return;
    }
    if (!note) {
      note = doc.createElement("p");
      note.className = "note search-note needs-js";
      (card.querySelector(".check-content") || card).prepend(note);
      notes.set(card, note);
    }
    const quoted = missing.map((word) => `\u201c${word}\u201d`).join(", ");
    note.textContent =
      `Search: ${quoted} is in this check's data, but not in the part this page shows ` +
      "(its tables are cut to keep it small): see report.json.";
    note.hidden = false;
  }

  // What the search could not look at in the cards it hid: data cut from the page's
  // report data (searched only as far as the tables show) and raw files past their head.
  const limits = doc.createElement("p");
  limits.id = "search-limits";
  limits.className = "note needs-js";
  limits.hidden = true;
  (noMatch || search).after(limits);
  const LIST = 5;
  function sayLimits(hidden) {
    const cut = hidden.filter((card) => entryOf(card).cut).map((card) => card.id);
    const rawFiles = hidden.reduce((sum, card) => sum + entryOf(card).rawCut, 0);
    const parts = [];
    if (cut.length) {
      const more = cut.length > LIST ? ` and ${cut.length - LIST} more` : "";
      parts.push(`part of the data of ${cut.slice(0, LIST).join(", ")}${more} (too large for this page)`);
    }
    if (rawFiles) {
      parts.push(`raw output past the part shown, in ${rawFiles} ${rawFiles === 1 ? "file" : "files"}`);
    }
    limits.hidden = !parts.length;
    limits.textContent = parts.length
      ? `Not searched: ${parts.join("; ")}. report.json and raw/ beside this page hold it all.`
      : "";
  }

  // -- filters: status chips, category chips (tiles), search ------------------------
  const FILTERS = ["data-filter-status", "data-filter-category"];
  const pressed = (attr) =>
    new Set(
      Array.from(doc.querySelectorAll(`[${attr}][aria-pressed="true"]`), (chip) =>
        chip.getAttribute(attr),
      ),
    );
  const terms = () => search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);

  // Cards that the search opened (closed again when the search changes).
  const openedBySearch = new Set();
  const AUTO_OPEN = 10;

  function apply() {
    const statuses = pressed(FILTERS[0]);
    const categories = pressed(FILTERS[1]);
    const words = terms();
    const shown = [];
    const unmatched = [];
    for (const card of cards) {
      const chosen =
        (!statuses.size || statuses.has(card.dataset.status)) &&
        (!categories.size || categories.has(card.dataset.category));
      const missing = chosen && words.length ? offPage(card, words) : [];
      const show = chosen && missing !== null;
      card.hidden = !show;
      if (show) shown.push(card);
      else if (chosen) unmatched.push(card);
      if (show || notes.has(card)) noteIn(card, show ? missing : []);
    }
    sayLimits(unmatched);
    visibleCount.textContent = String(shown.length);
    noMatch.hidden = shown.length !== 0;
    const active = statuses.size + categories.size + (words.length ? 1 : 0);
    clearButton.hidden = active === 0;
    clearButton.textContent = `Clear filters (${active})`;
    for (const card of openedBySearch) bodyOf(card).open = false;
    openedBySearch.clear();
    if (words.length && shown.length <= AUTO_OPEN) {
      for (const card of shown) {
        const body = bodyOf(card);
        if (!body.open) {
          body.open = true;
          openedBySearch.add(card);
        }
      }
    }
    highlight(words, shown);
  }

  function setChip(attr, value, on) {
    for (const chip of doc.querySelectorAll(`[${attr}]`)) {
      if (chip.getAttribute(attr) === value) chip.setAttribute("aria-pressed", String(on));
    }
  }

  function clearFilters() {
    for (const attr of FILTERS) {
      for (const chip of doc.querySelectorAll(`[${attr}]`)) chip.setAttribute("aria-pressed", "false");
    }
    search.value = "";
    apply();
  }

  // Search matches highlighted without touching the DOM (CSS Custom Highlight API).
  const MAX_MARKS = 1500;
  function highlight(words, shown) {
    if (!window.CSS || !CSS.highlights || typeof Highlight !== "function") return;
    CSS.highlights.delete("search");
    const useful = words.filter((word) => word.length >= 2);
    if (!useful.length) return;
    const ranges = [];
    for (const card of shown) {
      const walker = doc.createTreeWalker(card, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.data.toLowerCase();
        for (const word of useful) {
          for (let at = text.indexOf(word); at !== -1; at = text.indexOf(word, at + word.length)) {
            const range = new Range();
            range.setStart(node, at);
            range.setEnd(node, at + word.length);
            ranges.push(range);
            if (ranges.length >= MAX_MARKS) break;
          }
        }
        if (ranges.length >= MAX_MARKS) break;
      }
      if (ranges.length >= MAX_MARKS) break;
    }
    CSS.highlights.set("search", new Highlight(...ranges));
  }

  let pending = 0;
  search.addEventListener("input", () => {
    cancelAnimationFrame(pending);
    pending = requestAnimationFrame(apply);
  });

  // -- permalinks: #check-id opens its card, even when a filter had hidden it -------
  function reveal(id) {
    const target = id ? doc.getElementById(id) : null;
    if (!target) return;
    const card = target.closest("article.check");
    if (card) {
      if (card.hidden) clearFilters();
      const body = bodyOf(card);
      body.open = true;
      openedBySearch.delete(card);
    }
    target.scrollIntoView({ block: "start" });
  }
  const hashId = () => {
    try {
      return decodeURIComponent(location.hash.slice(1));
    } catch (_) {
      return location.hash.slice(1);
    }
  };
  window.addEventListener("hashchange", () => reveal(hashId()));

  // -- sortable tables -----------------------------------------------------------------
  function sortKey(row, index) {
    const cell = row.cells[index];
    if (!cell) return "";
    const num = cell.dataset.num;
    if (num !== undefined && num !== "") return Number(num);
    const text = cell.textContent.trim();
    const value = Number(text.replace(/,/g, ""));
    return text !== "" && !Number.isNaN(value) ? value : text;
  }
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") return a - b;
    if (typeof a === "number") return -1;
    if (typeof b === "number") return 1;
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }
  function sortBy(th) {
    const table = th.closest("table");
    const body = table.tBodies[0];
    if (!body) return;
    const index = th.cellIndex;
    const order = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    for (const other of th.parentElement.cells) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", order);
    const sign = order === "ascending" ? 1 : -1;
    const rows = Array.from(body.rows, (row) => [sortKey(row, index), row]);
    rows.sort((a, b) => sign * compare(a[0], b[0]));
    body.append(...rows.map((pair) => pair[1]));
  }

  // -- copy ----------------------------------------------------------------------------
  function textToCopy(button) {
    const target = button.dataset.copyTarget;
    if (target === undefined) return button.dataset.copy || "";
    const element = doc.getElementById(target.replace(/^#/, ""));
    if (!element) return "";
    if (element.matches("pre.raw")) {
      return Array.from(element.querySelectorAll(".line"), (line) => line.textContent).join("\n");
    }
    return element.textContent;
  }
  function copyByHand(text) {
    const buffer = doc.createElement("textarea");
    buffer.className = "copy-buffer";
    buffer.value = text;
    doc.body.append(buffer);
    buffer.select();
    let ok = false;
    try {
      ok = doc.execCommand("copy");
    } catch (_) {
      ok = false;
    }
    buffer.remove();
    return ok;
  }
  function flash(button, word) {
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = word;
    setTimeout(() => {
      button.textContent = label;
    }, 1200);
  }
  function copy(button) {
    const text = textToCopy(button);
    const done = () => flash(button, "Copied");
    const byHand = () => flash(button, copyByHand(text) ? "Copied" : "Copy failed");
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, byHand);
    } else {
      byHand();
    }
  }

  // -- one click handler for the page ------------------------------------------------------
  doc.addEventListener("click", (event) => {
    const element = event.target instanceof Element ? event.target : null;
    if (!element) return;
    const chip = element.closest("[data-filter-status], [data-filter-category]");
    if (chip) {
      const attr = chip.hasAttribute(FILTERS[0]) ? FILTERS[0] : FILTERS[1];
      setChip(attr, chip.getAttribute(attr), chip.getAttribute("aria-pressed") !== "true");
      apply();
      return;
    }
    const button = element.closest("button");
    if (button) {
      if (button.classList.contains("copy")) copy(button);
      else if (button.id === "expand-all" || button.id === "collapse-all") {
        const open = button.id === "expand-all";
        for (const card of cards) bodyOf(card).open = open;
        openedBySearch.clear();
      } else if (button.id === "clear-filters" || button.classList.contains("clear-filters")) {
        clearFilters();
      } else if (button.id === "show-problems") {
        clearFilters();
        for (const status of ["fail", "timeout", "error", "warn"]) setChip(FILTERS[0], status, true);
        apply();
        doc.getElementById("checks").scrollIntoView({ block: "start" });
      }
      return;
    }
    const th = element.closest("table.sortable > thead th");
    if (th) {
      sortBy(th);
      return;
    }
    const link = element.closest('a[href^="#"]');
    // A link to the card already in the address bar fires no hashchange: reveal it here.
    if (link && link.hash === location.hash) setTimeout(() => reveal(hashId()), 0);
  });

  // -- keys: `/` searches, Escape clears, Enter or Space on a column header sorts ---------
  const typing = (element) =>
    element instanceof HTMLElement &&
    (element.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(element.tagName));
  doc.addEventListener("keydown", (event) => {
    if (event.key === "/" && !typing(event.target) && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      search.focus();
      search.select();
    } else if (event.key === "Escape" && (event.target === search || search.value)) {
      if (search.value) {
        search.value = "";
        apply();
      }
      search.blur();
    } else if ((event.key === "Enter" || event.key === " ") && event.target instanceof Element) {
      const th = event.target.closest("table.sortable > thead th");
      if (th) {
        event.preventDefault();
        sortBy(th);
      }
    }
  });

  // -- print: every card open, then as it was ---------------------------------------------
  let closedBeforePrint = [];
  window.addEventListener("beforeprint", () => {
    closedBeforePrint = cards.map(bodyOf).filter((body) => !body.open);
    for (const body of closedBeforePrint) body.open = true;
  });
  window.addEventListener("afterprint", () => {
    for (const body of closedBeforePrint) body.open = false;
    closedBeforePrint = [];
  });

  apply();
  if (location.hash) reveal(hashId());
})();
