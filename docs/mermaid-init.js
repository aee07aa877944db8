// Turns the book's ```mermaid code blocks into diagrams. mermaid.min.js is
// not in the repository: infra/local/book fetches a pinned release into the
// git-ignored .cache/ and copies it beside this file before `mdbook build`.
(function () {
  if (typeof mermaid === "undefined") {
    return; // the blocks stay readable as text
  }
  document.querySelectorAll("code.language-mermaid").forEach(function (code) {
    var pre = code.parentElement;
    var diagram = document.createElement("pre");
    diagram.className = "mermaid";
    diagram.textContent = code.textContent;
    pre.replaceWith(diagram);
  });
  var html = document.documentElement.classList;
  var dark = html.contains("coal") || html.contains("navy") || html.contains("ayu");
  mermaid.initialize({ startOnLoad: false, theme: dark ? "dark" : "default" });
  mermaid.run({ querySelector: "pre.mermaid" });
})();
