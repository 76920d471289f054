(function () {
  function value(row, col, numeric) {
    var cell = row.cells[col];
    if (!numeric) return cell.textContent.toLowerCase();
    var raw = cell.getAttribute("data-value");
    var x = parseFloat(raw === null ? cell.textContent : raw);
    return isNaN(x) ? -Infinity : x;
  }
  function sortBy(table, th, col) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var numeric = th.classList.contains("num");
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col, numeric), y = value(b, col, numeric);
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter") sortBy(table, th, col);
      });
    });
  });
  document.querySelectorAll("input.filter").forEach(function (input) {
    var id = input.getAttribute("data-table");
    var table = document.getElementById(id), count = document.getElementById(id + "-count");
    input.addEventListener("input", function () {
      var query = input.value.toLowerCase(), rows = table.tBodies[0].rows, shown = 0;
      Array.prototype.forEach.call(rows, function (row) {
        row.hidden = row.textContent.toLowerCase().indexOf(query) === -1;
        if (!row.hidden) shown++;
      });
      count.textContent = shown + " of " + rows.length + " rows";
    });
  });
})();
