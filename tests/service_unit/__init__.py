"""Tests of packaging/snapshot-agent.service: systemd's verdicts and the agent's needs."""
