/* Tick techniques on the index, then download their papers (BibTeX, RIS, CSL-JSON) through /export or
   compare them on /compare.

   The selection is kept in sessionStorage, so it survives paging and filtering; other features read it
   through window.AtlasSelection:
     AtlasSelection.slugs()          -> the ticked slugs, in ticking order
     AtlasSelection.url(path, extra) -> path?slug=a&slug=b plus extra parameters (an object)
     AtlasSelection.onChange(fn)     -> fn(slugs) after every change
     AtlasSelection.clear()
   Without JavaScript the checkboxes still belong to the selection form, whose buttons submit the ticked
   slugs of the current page (slug=a&slug=b) to either address. */
(function () {
  "use strict";

  var KEY = "atlas.selection";
  var listeners = [];

  function load() {
    try {
      var value = JSON.parse(window.sessionStorage.getItem(KEY) || "[]");
      return Array.isArray(value) ? value.filter(function (s) { return typeof s === "string"; }) : [];
    } catch (err) {
      return [];
    }
  }

  var selected = load();

  function save() {
    try {
      window.sessionStorage.setItem(KEY, JSON.stringify(selected));
    } catch (err) { /* storage may be disabled: the selection then lasts for this page */ }
    listeners.forEach(function (fn) { fn(selected.slice()); });
  }

  function url(path, extra) {
    var params = new URLSearchParams();
    selected.forEach(function (slug) { params.append("slug", slug); });
    Object.keys(extra || {}).forEach(function (k) { params.set(k, extra[k]); });
    return path + "?" + params.toString();
  }

  window.AtlasSelection = {
    slugs: function () { return selected.slice(); },
    url: url,
    onChange: function (fn) { listeners.push(fn); fn(selected.slice()); },
    set: function (slug, on) {
      var at = selected.indexOf(slug);
      if (on && at < 0) selected.push(slug);
      if (!on && at >= 0) selected.splice(at, 1);
      save();
    },
    clear: function () { selected = []; save(); }
  };

  function init() {
    var form = document.getElementById("selection");
    var boxes = Array.prototype.slice.call(document.querySelectorAll("input.pick[name=slug]"));
    boxes.forEach(function (box) {
      box.checked = selected.indexOf(box.value) >= 0;
      box.addEventListener("change", function () { window.AtlasSelection.set(box.value, box.checked); });
    });
    if (!form) return;
    var exportPath = form.getAttribute("data-export");
    var comparePath = form.getAttribute("data-compare");
    var count = form.querySelector(".selection-count");
    var idle = count ? count.textContent : "";
    var clear = form.querySelector(".selection-clear");
    if (clear) clear.addEventListener("click", function () {
      boxes.forEach(function (box) { box.checked = false; });
      window.AtlasSelection.clear();
    });
    form.addEventListener("submit", function (event) {
      // the whole selection, including techniques ticked on other pages of the index; without a known
      // button (an old browser) the form submits itself with the ticks of this page
      var button = event.submitter;
      if (!button || !selected.length) return;
      event.preventDefault();
      if (button.hasAttribute("formaction")) {
        window.location.href = url(comparePath);
      } else {
        window.location.href = url(exportPath, { format: button.value });
      }
    });
    window.AtlasSelection.onChange(function (slugs) {
      if (count) count.textContent = slugs.length ? slugs.length + " selected." : idle;
      if (clear) clear.hidden = !slugs.length;
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
