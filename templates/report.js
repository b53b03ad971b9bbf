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

  // Search text of each card, lower-cased once, on first use.
  const texts = new Map();
  const textOf = (card) => {
    let text = texts.get(card);
    if (text === undefined) {
      text = card.textContent.toLowerCase();
      texts.set(card, text);
    }
    return text;
  };

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
    for (const card of cards) {
      const show =
        (!statuses.size || statuses.has(card.dataset.status)) &&
        (!categories.size || categories.has(card.dataset.category)) &&
        words.every((word) => textOf(card).includes(word));
      card.hidden = !show;
      if (show) shown.push(card);
    }
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
