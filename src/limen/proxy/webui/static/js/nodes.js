// Filter the nodes table while typing; the form still works without script (GET).
const search = document.getElementById("q");
const labelBox = document.getElementById("label");
const rows = [...document.querySelectorAll("#nodes tbody tr")];
const count = document.getElementById("node-count");
const total = rows.length;

function labelFilters() {
  return labelBox.value.split(",").map((part) => part.trim()).filter((part) => part.includes("="))
    .map((part) => { const at = part.indexOf("="); return part.slice(0, at).trim() + "=" + part.slice(at + 1).trim(); });
}

function apply() {
  const needle = search.value.trim().toLowerCase();
  const wanted = labelFilters();
  let shown = 0;
  for (const row of rows) {
    const labels = row.dataset.labels.split("\n");
    const visible = (!needle || row.dataset.search.toLowerCase().includes(needle))
      && wanted.every((pair) => labels.includes(pair));
    row.hidden = !visible;
    if (visible) shown += 1;
  }
  count.textContent = `${shown} of ${total} node${total === 1 ? "" : "s"}`;
}

if (search && labelBox && count) {
  search.addEventListener("input", apply);
  labelBox.addEventListener("input", apply);
}
