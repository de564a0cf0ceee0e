// Shows whether live updates are flowing; sends the user to sign in when the
// websocket is refused for want of a session.
(function () {
  function setState(state, title) {
    var dot = document.getElementById("live-state");
    if (!dot) return;
    dot.dataset.state = state;
    dot.title = title;
  }
  document.addEventListener("htmx:wsOpen", function () { setState("open", "Live updates on"); });
  document.addEventListener("htmx:wsClose", function (event) {
    var code = event.detail && event.detail.event && event.detail.event.code;
    if (code === 4401) { window.location.reload(); return; }
    if (code === 4429) {
      setState("closed", "No live updates: too many live views are open for your account. Close some, then reload.");
      return;
    }
    setState("closed", "Live updates interrupted; reconnecting");
  });
  // A pushed fragment replaces the <details> inside it: those the reader had
  // opened (each has an id) are opened again in the same turn, before any paint.
  var opened = [];
  document.addEventListener("htmx:wsBeforeMessage", function () {
    opened = Array.prototype.map.call(
      document.querySelectorAll("details[id][open]"), function (d) { return d.id; });
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    opened.forEach(function (id) {
      var details = document.getElementById(id);
      if (details) details.open = true;
    });
    setState("open", "Last update " + new Date().toLocaleTimeString());
  });
})();
