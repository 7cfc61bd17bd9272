/* pirloop embed: one script tag sets a pirloop image as an element's background.
 *
 *   <script src="https://HOST/embed.js" data-placement="background" data-target="#hero" async></script>
 *
 * It asks for an impression, sets the target's background (cover) once the image has loaded,
 * at the smallest display width the service offers that covers the element on this screen,
 * and reports a click on the element and the time it was visible (when the page is hidden or
 * closed) with navigator.sendBeacon. It never adds elements (no layout shift) and never
 * throws: when pirloop is down, paused or slow, the host page simply keeps its own look.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src) return;
  var base;
  try { base = new URL(script.src).origin; } catch (e) { return; }
  var placement = script.getAttribute("data-placement") === "rating" ? "rating" : "background";
  var selector = script.getAttribute("data-target");
  var STORAGE_KEY = "pirloop_vid";
  var TIMEOUT_MS = 4000;
  // The widths GET /v1/images/{id}?w= serves: DISPLAY_WIDTHS in app/image_sizes.py.
  var WIDTHS = [128, 256, 512, 1024, 1280, 1920];

  // Device pixels the image is drawn across: a square image with background-size: cover is
  // max(width, height) CSS pixels wide. Then the smallest served width at least that wide
  // (the largest for anything wider).
  function displayWidth(target) {
    var rect = target.getBoundingClientRect();
    var needed = Math.max(rect.width, rect.height) * (window.devicePixelRatio || 1);
    for (var i = 0; i < WIDTHS.length; i++) {
      if (WIDTHS[i] >= needed) return WIDTHS[i];
    }
    return WIDTHS[WIDTHS.length - 1];
  }

  function visitorId() {
    try {
      var id = window.localStorage.getItem(STORAGE_KEY);
      if (!id) {
        id = (window.crypto && crypto.randomUUID) ? crypto.randomUUID()
          : String(Date.now()) + Math.random().toString(16).slice(2);
        window.localStorage.setItem(STORAGE_KEY, id);
      }
      return id;
    } catch (e) {
      return undefined; // storage blocked: the service falls back to the connection
    }
  }

  function beacon(token, kind, value) {
    try {
      var body = JSON.stringify({ token: token, kind: kind, value: value });
      // text/plain keeps this a "simple" request: beacons cannot make a CORS preflight.
      var blob = new Blob([body], { type: "text/plain" });
      var url = base + "/v1/interactions/beacon";
      if (!(navigator.sendBeacon && navigator.sendBeacon(url, blob))) {
        fetch(url, { method: "POST", body: body, mode: "no-cors", keepalive: true,
          credentials: "omit", headers: { "Content-Type": "text/plain" } }).catch(function () {});
      }
    } catch (e) { /* never break the host page */ }
  }

  function track(target, impression) {
    var clicked = false;
    var dwellSent = false;
    var visibleSince = document.visibilityState === "visible" ? Date.now() : null;
    var visibleMs = 0;
    target.addEventListener("click", function () {
      if (clicked) return;
      clicked = true;
      beacon(impression.token, "click", 1);
    });
    function flushDwell() {
      if (visibleSince !== null) { visibleMs += Date.now() - visibleSince; visibleSince = null; }
      if (dwellSent) return;
      dwellSent = true; // the service keeps one dwell per impression: the first report
      beacon(impression.token, "dwell", Math.min(86400, Math.round(visibleMs / 100) / 10));
    }
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") flushDwell();
      else if (visibleSince === null) visibleSince = Date.now();
    });
    window.addEventListener("pagehide", flushDwell);
  }

  function show(target, impression) {
    var image = new Image();
    // image_url is relative to pirloop unless it has PIRLOOP_PUBLIC_URL: never to this page.
    var url;
    try {
      var parsed = new URL(impression.image_url, base + "/");
      parsed.searchParams.set("w", String(displayWidth(target)));
      url = parsed.href;
    } catch (e) { return; }
    image.onload = function () {
      try {
        target.style.backgroundImage = 'url("' + url.replace(/"/g, "%22") + '")';
        target.style.backgroundSize = "cover";
        target.style.backgroundPosition = "center";
        target.setAttribute("data-pirloop-impression", String(impression.impression_id));
        track(target, impression);
      } catch (e) { /* ignore */ }
    };
    image.src = url;
  }

  function start() {
    try {
      var target = selector ? document.querySelector(selector) : script.parentElement;
      if (!target || !window.fetch || !window.JSON) return;
      var controller = window.AbortController ? new AbortController() : null;
      var timer = controller ? setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : null;
      fetch(base + "/v1/impressions", {
        method: "POST",
        mode: "cors",
        credentials: "omit",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ placement: placement, visitor_id: visitorId() }),
        signal: controller ? controller.signal : undefined
      }).then(function (response) {
        if (timer) clearTimeout(timer);
        return response.ok ? response.json() : null;
      }).then(function (impression) {
        if (impression && impression.token && impression.image_url) show(target, impression);
      }).catch(function () { /* pirloop is down: leave the page as it is */ });
    } catch (e) { /* never break the host page */ }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
