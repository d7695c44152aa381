// Hewer dashboard: live regions, stream output, confirmations, theme. No framework.
"use strict";
document.documentElement.classList.add("js");

// Theme: the system's, unless the toggle chose one (kept in this browser).
(function () {
  var root = document.documentElement;
  var saved = localStorage.getItem("hewer-theme");
  if (saved) root.setAttribute("data-theme", saved);
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    function dark() {
      var t = root.getAttribute("data-theme");
      return t ? t === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
    }
    function label() {
      button.textContent = dark() ? "Light mode" : "Dark mode";
      button.setAttribute("aria-pressed", String(dark()));
    }
    label();
    button.addEventListener("click", function () {
      var next = dark() ? "light" : "dark";
      root.setAttribute("data-theme", next);
      localStorage.setItem("hewer-theme", next);
      label();
    });
  });
})();

document.addEventListener("DOMContentLoaded", function () {
  // A select that submits its form when changed (the tenant switch).
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // Forms that ask first (deletions).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // Live regions: re-read this page every data-live milliseconds and swap each region by
  // its id. The server renders the page (escaped as always); the region is left alone
  // while the keyboard focus or an open <details> is inside it, and polling stops when the
  // new region carries no interval (a finished run).
  var regions = Array.prototype.slice.call(document.querySelectorAll("[data-live]"));
  regions.forEach(function (region) { schedule(region.id); });

  function schedule(id) {
    var region = document.getElementById(id);
    var interval = region && parseInt(region.getAttribute("data-live"), 10);
    if (!interval) return;
    setTimeout(function () { refresh(id); }, interval);
  }

  function busy(region) {
    return region.contains(document.activeElement) && document.activeElement !== document.body
      || region.querySelector("details[open]:not([id^='task-'])");
  }

  function refresh(id) {
    var region = document.getElementById(id);
    if (!region) return;
    if (document.hidden || busy(region)) { schedule(id); return; }
    fetch(window.location.href, { headers: { "X-Hewer-Live": "1" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("status " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
        var current = document.getElementById(id);
        if (fresh && current && !busy(current)) {
          var open = Array.prototype.map.call(current.querySelectorAll("details[open][id]"), function (d) { return d.id; });
          current.replaceWith(document.importNode(fresh, true));
          open.forEach(function (d) { var el = document.getElementById(d); if (el) el.open = true; });
        }
        schedule(id);
      })
      .catch(function () { setTimeout(function () { refresh(id); }, 10000); });
  }

  // Stream output of a running run (server-sent events); text only, never HTML.
  var stream = document.getElementById("stream");
  if (stream && stream.getAttribute("data-src") && window.EventSource) {
    var state = document.getElementById("stream-state");
    var source = new EventSource(stream.getAttribute("data-src"));
    source.addEventListener("chunk", function (event) {
      var data = JSON.parse(event.data);
      stream.appendChild(document.createTextNode(data.text));
      if (state) state.textContent = "Streaming…";
    });
    source.addEventListener("done", function () {
      source.close();
      if (state) state.textContent = "The run has finished.";
    });
  }
});
