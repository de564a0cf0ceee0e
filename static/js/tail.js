// The live tail page: keeps at most data-max-rows rows, and says what the
// websocket is doing. Rows, the rate and the pause button are rendered by the
// server and swapped in by htmx's ws extension; nothing here touches their content.
(function () {
  var RETRIED = [1006, 1011, 1012, 1013]; // codes htmx's ws extension reconnects after
  var FINAL = { 4400: "Stopped: see the error above.", 4401: "Signed out.",
                4403: "Your account has no role.", 4404: "Stopped: see the error above.",
                4429: "Stopped: see the error above." };
  var socket = null;

  function inTail(event) {
    return event.target && event.target.closest && event.target.closest("#tail");
  }
  function say(state, text, offerReconnect) {
    var conn = document.getElementById("tail-conn");
    var again = document.getElementById("tail-reconnect");
    if (conn) { conn.dataset.state = state; conn.textContent = text; }
    if (again) again.hidden = !offerReconnect;
  }
  function trim() {
    var rows = document.getElementById("tail-rows");
    if (!rows) return;
    var max = Number(rows.dataset.maxRows) || 500;
    while (rows.children.length > max) rows.removeChild(rows.lastElementChild);
  }

  document.addEventListener("htmx:wsConnecting", function (e) {
    if (inTail(e)) say("connecting", "Connecting…", false);
  });
  document.addEventListener("htmx:wsOpen", function (e) {
    if (!inTail(e)) return;
    socket = e.detail.socketWrapper;
    say("open", "Live", false);
  });
  document.addEventListener("htmx:wsClose", function (e) {
    if (!inTail(e)) return;
    socket = e.detail.socketWrapper || socket;
    var code = e.detail.event && e.detail.event.code;
    if (FINAL[code]) say("closed", FINAL[code], false);
    else if (RETRIED.indexOf(code) >= 0) say("closed", "Connection closed (" + code + "); reconnecting…", false);
    else say("closed", "Connection closed (" + code + ").", true);
  });
  document.addEventListener("htmx:wsAfterMessage", function (e) {
    if (inTail(e)) trim();
  });
  document.addEventListener("click", function (e) {
    if (e.target && e.target.id === "tail-reconnect" && socket) {
      say("connecting", "Connecting…", false);
      socket.reconnect();
    }
  });
})();
