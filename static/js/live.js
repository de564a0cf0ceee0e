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
    setState("closed", "Live updates interrupted; reconnecting");
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    setState("open", "Last update " + new Date().toLocaleTimeString());
  });
})();
