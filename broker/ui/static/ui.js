// Progressive enhancement for the MESH web page: every page works without this file.
// - The send form checks the file's size before sending (a browser shows the server's early refusal of an
//   upload it is still sending as a network error) and shows the upload's progress.
// - An error summary takes the focus, so screen reader users hear it first.
// - The "signed in" page moves on by itself.
(function () {
  "use strict";

  var summary = document.querySelector("[data-focus]");
  if (summary) { summary.focus(); }

  var follow = document.querySelector("[data-follow]");
  if (follow) { window.location.replace(follow.getAttribute("href")); }

  var form = document.querySelector("form[data-upload]");
  if (!form || !window.XMLHttpRequest || !window.FormData) { return; }

  function showError(text) {
    var old = document.querySelector(".error-summary");
    if (old) { old.parentNode.removeChild(old); }
    var box = document.createElement("div");
    box.className = "error-summary";
    box.setAttribute("role", "alert");
    box.setAttribute("tabindex", "-1");
    box.setAttribute("aria-labelledby", "error-summary-title");
    var title = document.createElement("h2");
    title.className = "error-summary-title";
    title.id = "error-summary-title";
    title.textContent = "There is a problem";
    var list = document.createElement("ul");
    list.className = "error-summary-list";
    var item = document.createElement("li");
    var link = document.createElement("a");
    link.href = "#file";
    link.textContent = text;
    item.appendChild(link);
    list.appendChild(item);
    box.appendChild(title);
    box.appendChild(list);
    var main = document.getElementById("main");
    main.insertBefore(box, main.firstChild);
    if (document.title.indexOf("Error: ") !== 0) { document.title = "Error: " + document.title; }
    box.focus();
  }

  form.addEventListener("submit", function (event) {
    var input = document.getElementById("file");
    var limit = parseInt(form.getAttribute("data-max-bytes"), 10);
    var file = input && input.files && input.files[0];
    if (file && limit && file.size > limit) {
      event.preventDefault();
      showError("The selected file must be smaller than " + form.getAttribute("data-max-text"));
      return;
    }
    if (!file) { return; } // the server says what is missing
    event.preventDefault();
    var progress = form.querySelector("[data-progress]");
    var bar = progress && progress.querySelector("progress");
    var button = form.querySelector("button[type=submit]");
    if (progress) { progress.hidden = false; }
    if (button) { button.disabled = true; }
    var request = new XMLHttpRequest();
    request.open("POST", form.getAttribute("action"));
    request.upload.addEventListener("progress", function (e) {
      if (bar && e.lengthComputable) { bar.value = Math.round((e.loaded / e.total) * 100); }
    });
    request.addEventListener("load", function () {
      // Success ends at the Sent page (the server's redirect, followed); a refusal is a whole page to show.
      if (request.status === 200 && request.responseURL.indexOf("/ui/sent") !== -1) {
        window.location.assign(request.responseURL);
        return;
      }
      document.open();
      document.write(request.responseText);
      document.close();
    });
    request.addEventListener("error", function () {
      if (progress) { progress.hidden = true; }
      if (button) { button.disabled = false; }
      showError("The file could not be sent. Check your connection and try again");
    });
    request.send(new FormData(form));
  });
})();
