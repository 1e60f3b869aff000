// Catalog pages: client-side filtering of /models and the copy buttons. No external resources.
"use strict";

(function () {
  function filterModels() {
    var table = document.getElementById("model-table");
    if (!table) return;
    var search = document.getElementById("model-search");
    var price = document.getElementById("filter-price");
    var selects = document.querySelectorAll("select[data-filter]");

    function apply() {
      var words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      var wanted = {};
      selects.forEach(function (sel) { wanted[sel.getAttribute("data-filter")] = sel.value; });
      var max = price.value === "" ? null : parseFloat(price.value);
      var shown = 0;
      table.querySelectorAll("tr.model-row").forEach(function (row) {
        var hay = row.getAttribute("data-search") || "";
        var ok = words.every(function (w) { return hay.indexOf(w) !== -1; });
        if (ok && wanted.mode) ok = row.getAttribute("data-modes").split(" ").indexOf(wanted.mode) !== -1;
        if (ok && wanted.provider) ok = row.getAttribute("data-providers").split(" ").indexOf(wanted.provider) !== -1;
        if (ok && wanted.creator) ok = row.getAttribute("data-creator") === wanted.creator;
        if (ok && max !== null && !isNaN(max)) {
          var p = row.getAttribute("data-price");
          ok = p !== "" && parseFloat(p) <= max;
        }
        row.hidden = !ok;
        if (ok) shown += 1;
      });
      var count = document.getElementById("model-count");
      if (count) count.textContent = shown + (shown === 1 ? " model" : " models");
      var none = document.getElementById("no-match");
      if (none) none.hidden = shown !== 0;
    }

    search.addEventListener("input", apply);
    price.addEventListener("input", apply);
    selects.forEach(function (sel) { sel.addEventListener("change", apply); });
    var form = search.form;
    if (form) form.addEventListener("submit", function (ev) { ev.preventDefault(); apply(); });
    apply();
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "copy-buffer";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  function copyText(text) {
    window.__lastCopied = text;
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(
        function () { return true; },
        function () { return fallbackCopy(text); }
      );
    }
    return Promise.resolve(fallbackCopy(text));
  }

  function setupCopy() {
    document.querySelectorAll("button[data-copy-target]").forEach(function (button) {
      button.addEventListener("click", function () {
        var target = document.getElementById(button.getAttribute("data-copy-target"));
        if (!target) return;
        copyText(target.textContent).then(function (ok) {
          button.textContent = ok ? "Copied" : "Copy failed";
          button.setAttribute("data-copied", ok ? "yes" : "no");
          window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
        });
      });
    });
  }

  function init() {
    filterModels();
    setupCopy();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
