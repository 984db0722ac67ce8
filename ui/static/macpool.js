// Progressive enhancement only: every form works without this file.
// Range rows of the pool form are added and removed in place instead of a round trip.
"use strict";
document.addEventListener("click", function (event) {
  var target = event.target;
  if (!(target instanceof HTMLElement)) return;
  var list = target.closest("form") && target.closest("form").querySelector("[data-range-rows]");
  if (!list) return;
  if (target.hasAttribute("data-add-row")) {
    event.preventDefault();
    var rows = list.querySelectorAll("[data-range-row]");
    var row = rows[rows.length - 1].cloneNode(true);
    row.classList.remove("has-error");
    row.querySelectorAll("input").forEach(function (input) {
      input.value = "";
      input.removeAttribute("aria-invalid");
    });
    row.querySelectorAll(".row-error").forEach(function (p) { p.remove(); });
    list.appendChild(row);
    renumber(list);
    row.querySelector("input").focus();
  } else if (target.hasAttribute("data-remove-row")) {
    event.preventDefault();
    var all = list.querySelectorAll("[data-range-row]");
    var own = target.closest("[data-range-row]");
    if (all.length > 1) {
      own.remove();
      renumber(list);
    } else {
      own.querySelectorAll("input").forEach(function (input) { input.value = ""; });
    }
  }
});

function renumber(list) {
  list.querySelectorAll("[data-range-row]").forEach(function (row, i) {
    var button = row.querySelector("[data-remove-row]");
    button.value = "remove:" + i;
    button.setAttribute("aria-label", "Remove range row " + (i + 1));
  });
}
