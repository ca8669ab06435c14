/* Typeset the formulas with KaTeX when it has been loaded (it is served by this site, never a CDN).
   Without KaTeX, or without JavaScript, the pages show the LaTeX source as code. */
(function () {
  "use strict";

  var OPTIONS = { throwOnError: false, trust: false, strict: "ignore", output: "htmlAndMathml" };

  function hasTopLevelBreak(src) {
    return /\\\\/.test(src) && !/^\s*\\begin\{/.test(src);
  }

  function displaySource(src) {
    // several lines separated by \\ : stack them, centred, as one display
    return hasTopLevelBreak(src) ? "\\begin{gathered}" + src + "\\end{gathered}" : src;
  }

  function renderDisplay(figure, katex) {
    var code = figure.querySelector(".tex-source code");
    var target = figure.querySelector(".tex-display");
    if (!code || !target) return;
    try {
      katex.render(displaySource(code.textContent), target, Object.assign({ displayMode: true }, OPTIONS));
    } catch (err) {
      return; // keep the source visible
    }
    target.hidden = false;
    var pre = code.parentNode;
    var details = document.createElement("details");
    details.className = "tex-source-toggle";
    var summary = document.createElement("summary");
    summary.textContent = "LaTeX source";
    details.appendChild(summary);
    pre.parentNode.insertBefore(details, pre);
    details.appendChild(pre);
    figure.classList.add("typeset");
  }

  function renderInline(code, katex) {
    var span = document.createElement("span");
    span.className = "tex-rendered";
    span.title = code.textContent;
    try {
      katex.render(code.textContent, span, Object.assign({ displayMode: false }, OPTIONS));
    } catch (err) {
      return;
    }
    code.parentNode.replaceChild(span, code);
  }

  function run() {
    var katex = window.katex;
    if (!katex || typeof katex.render !== "function") return;
    document.documentElement.classList.add("katex-ready");
    Array.prototype.forEach.call(document.querySelectorAll("figure.formula"), function (f) { renderDisplay(f, katex); });
    Array.prototype.forEach.call(document.querySelectorAll("code.tex-inline"), function (c) { renderInline(c, katex); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", run);
  } else {
    run();
  }
})();
