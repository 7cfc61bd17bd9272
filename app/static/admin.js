/* The dashboard's live counters (polled JSON, drawn on a canvas) and action confirmations. */
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  var live = document.getElementById("live");
  var canvas = document.getElementById("live-canvas");
  if (!live || !canvas) return;
  var endpoint = live.getAttribute("data-endpoint");
  var series = [
    ["impressions_real", "#2463a6", "impressions, real"],
    ["impressions_simulated", "#9fc0e6", "impressions, simulated"],
    ["interactions_real", "#e07b24", "interactions, real"],
    ["interactions_simulated", "#f3c49a", "interactions, simulated"]
  ];

  function draw(data) {
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth || 560, height = canvas.clientHeight || 120;
    canvas.width = width * ratio; canvas.height = height * ratio;
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var n = data.minutes.length, top = 0;
    for (var i = 0; i < n; i++) {
      top = Math.max(top, data.impressions_real[i] + data.impressions_simulated[i],
        data.interactions_real[i] + data.interactions_simulated[i]);
    }
    top = Math.max(top, 1);
    var left = 4, bottom = height - 16, slot = (width - left) / n, bar = Math.max(1, slot / 2 - 1);
    ctx.strokeStyle = "#e5e7eb"; ctx.beginPath(); ctx.moveTo(left, bottom + 0.5); ctx.lineTo(width, bottom + 0.5); ctx.stroke();
    for (var m = 0; m < n; m++) {
      var x = left + m * slot;
      [[0, 1, 0], [2, 3, bar + 1]].forEach(function (pair) {
        var real = data[series[pair[0]][0]][m], sim = data[series[pair[1]][0]][m];
        var hReal = real / top * (bottom - 8), hSim = sim / top * (bottom - 8);
        ctx.fillStyle = series[pair[0]][1]; ctx.fillRect(x + pair[2], bottom - hReal, bar, hReal);
        ctx.fillStyle = series[pair[1]][1]; ctx.fillRect(x + pair[2], bottom - hReal - hSim, bar, hSim);
      });
    }
    ctx.fillStyle = "#6b7280"; ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(n + " min ago", left, height - 3);
    ctx.textAlign = "right"; ctx.fillText("now · peak " + top + "/min", width - 2, height - 3);
  }

  function update(data) {
    series.forEach(function (s) {
      var el = document.getElementById("live-" + s[0].replace("_", "-"));
      // The window's total, as the bars show it: the current minute alone is often empty.
      if (el) el.textContent = String(data[s[0]].reduce(function (a, b) { return a + b; }, 0));
    });
    var stamp = document.getElementById("live-updated");
    if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
    draw(data);
    live.setAttribute("data-loaded", "true");
  }

  function poll() {
    fetch(endpoint, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) update(data); })
      .catch(function () { /* try again next time */ });
  }
  poll();
  setInterval(poll, 5000);
})();
