// Forms: a "select all" box ticks every box it names in its form, and ticking a
// message's box makes "the messages ticked" the choice of its form.
(function () {
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.form) return;
    var name = box.dataset && box.dataset.selectAll;
    if (name) {
      box.form.querySelectorAll('input[type="checkbox"][name="' + name + '"]').forEach(function (b) {
        b.checked = box.checked;
      });
    }
    if (name || (box.type === "checkbox" && box.name === "id")) {
      var ticked = box.form.querySelector('input[type="radio"][name="select"][value="ids"]');
      if (ticked && box.checked) ticked.checked = true;
    }
  });
})();
