// iPadOS Safari says "Macintosh" in its User-Agent; a Mac has no touch
// screen. When the page guessed "Mac" and the screen takes touches, show
// the iPhone/iPad instructions instead. The buttons still let you choose.
(function () {
  var el = document.getElementById("platform");
  if (!el || el.getAttribute("data-detected") !== "true" || el.getAttribute("data-platform") !== "mac") return;
  if (navigator.maxTouchPoints > 1) location.replace(location.pathname + "?p=ios");
})();
