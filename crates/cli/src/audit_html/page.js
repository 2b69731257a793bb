(function () {
  "use strict";
  var q = document.getElementById("q");
  var o = document.getElementById("o");
  var count = document.getElementById("count");
  var rows = Array.prototype.slice.call(document.querySelectorAll("table.t tbody tr"));
  var text = rows.map(function (r) { return r.textContent.toLowerCase(); });
  function apply() {
    var want = q.value.trim().toLowerCase();
    var outcome = o.value;
    var shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var ok = (!want || text[i].indexOf(want) !== -1) &&
        (!outcome || rows[i].getAttribute("data-o") === outcome);
      rows[i].hidden = !ok;
      if (ok) { shown++; }
    }
    count.textContent = shown + " of " + rows.length + " rows shown";
  }
  q.addEventListener("input", apply);
  o.addEventListener("change", apply);
  Array.prototype.forEach.call(document.querySelectorAll("button.sort"), function (b) {
    b.addEventListener("click", function () {
      var th = b.parentNode;
      var table = th.closest("table");
      var col = Number(b.getAttribute("data-col"));
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(table.querySelectorAll("th"), function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var list = Array.prototype.slice.call(body.rows);
      list.sort(function (x, y) {
        var a = x.cells[col].textContent, c = y.cells[col].textContent;
        var na = Number(a), nc = Number(c);
        var r = (!isNaN(na) && !isNaN(nc) && a !== "" && c !== "") ? na - nc : a.localeCompare(c);
        return asc ? r : -r;
      });
      list.forEach(function (r) { body.appendChild(r); });
    });
  });
  apply();
})();
