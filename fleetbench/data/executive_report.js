"use strict";
// fleetbench executive report: sortable tables and print preparation. No network, no
// libraries. The report's Content Security Policy admits this script by its hash.
(() => {
  // A cell's sort key: its data-sort attribute, else its text. Numbers compare as
  // numbers; an empty data-sort (a missing figure) always sorts last.
  const key = (row, column, numeric) => {
    const cell = row.cells[column];
    if (!cell) return null;
    const raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort")
                                               : cell.textContent.trim();
    if (raw === "") return null;
    if (!numeric) return raw.toLowerCase();
    const value = Number(raw);
    return Number.isNaN(value) ? null : value;
  };

  const sortBy = (table, header) => {
    const headers = Array.from(header.parentElement.children);
    const column = headers.indexOf(header);
    const numeric = header.dataset.type === "number";
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    for (const other of headers) other.setAttribute("aria-sort", "none");
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const body = table.tBodies[0];
    const rows = Array.from(body.rows).map((row, index) => ({row, index,
                                                             value: key(row, column, numeric)}));
    rows.sort((a, b) => {
      if (a.value === b.value) return a.index - b.index;
      if (a.value === null) return 1;
      if (b.value === null) return -1;
      const order = a.value < b.value ? -1 : 1;
      return ascending ? order : -order;
    });
    for (const {row} of rows) body.appendChild(row);
  };

  for (const table of document.querySelectorAll("table.sortable")) {
    if (!table.tBodies.length || table.tBodies[0].rows.length < 2) continue;
    for (const header of table.tHead.rows[0].cells) {
      const button = header.querySelector("button");
      if (button) button.addEventListener("click", () => sortBy(table, header));
    }
  }

  // Printing shows every test's prompt, answer and evaluators.
  window.addEventListener("beforeprint", () => {
    for (const details of document.querySelectorAll("details")) details.open = true;
  });
})();
