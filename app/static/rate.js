/* The rating page: one image at a time, 1–5 stars or skip, the next image preloaded.
 * Every view is an impression (placement "rating") and every answer an interaction, through
 * the same public API the simulated users call. */
(function () {
  "use strict";
  var root = document.getElementById("rate");
  var img = document.getElementById("rate-image");
  var status = document.getElementById("rate-status");
  var countEl = document.getElementById("rated-count");
  var stars = Array.prototype.slice.call(document.querySelectorAll(".star"));
  var skip = document.getElementById("skip");
  var COUNT_KEY = "pirloop_rated";
  var VID_KEY = "pirloop_vid";
  var current = null;   // the impression on screen
  var upcoming = null;  // a promise of the next impression, its image already loaded
  var busy = false;
  // The widths GET /v1/images/{id}?w= serves: DISPLAY_WIDTHS in app/image_sizes.py.
  var WIDTHS = [128, 256, 512, 1024, 1280, 1920];

  // The prompt's frame is square, at most 32rem wide: ask for the smallest served width that
  // fills it at this screen's density (512 on most screens, 1024 on a 2x one), so the image
  // is resampled once on the server instead of stretched by the browser.
  function promptUrl(imageUrl) {
    var frame = img.parentElement.getBoundingClientRect();
    var needed = Math.max(frame.width, frame.height) * (window.devicePixelRatio || 1);
    var width = WIDTHS[WIDTHS.length - 1];
    for (var i = 0; i < WIDTHS.length; i++) {
      if (WIDTHS[i] >= needed) { width = WIDTHS[i]; break; }
    }
    var url = new URL(imageUrl, window.location.href);
    url.searchParams.set("w", String(width));
    return url.href;
  }

  function stored(key) { try { return window.localStorage.getItem(key); } catch (e) { return null; } }
  function store(key, value) { try { window.localStorage.setItem(key, value); } catch (e) { /* private mode */ } }

  function visitorId() {
    var id = stored(VID_KEY);
    if (!id) {
      id = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2);
      store(VID_KEY, id);
    }
    return id;
  }

  var rated = parseInt(stored(COUNT_KEY) || "0", 10) || 0;
  function showCount() { countEl.textContent = String(rated); }
  showCount();

  function setState(state, message) {
    root.setAttribute("data-state", state);
    status.textContent = message || "";
    var enabled = state === "ready";
    stars.forEach(function (b) { b.disabled = !enabled; });
    skip.disabled = !enabled;
  }

  function fetchImpression() {
    return fetch("/v1/impressions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ placement: "rating", visitor_id: visitorId() })
    }).then(function (response) {
      if (!response.ok) throw new Error(response.status === 503 ? "paused" : "error");
      return response.json();
    }).then(function (impression) {
      impression.display_url = promptUrl(impression.image_url);
      return new Promise(function (resolve, reject) {
        var preload = new Image();
        preload.onload = function () { resolve(impression); };
        preload.onerror = function () { reject(new Error("image")); };
        preload.src = impression.display_url;
      });
    });
  }

  function next() {
    var pending = upcoming || fetchImpression();
    upcoming = null;
    setState("loading", "Loading…");
    pending.then(function (impression) {
      current = impression;
      img.src = impression.display_url;
      img.setAttribute("data-impression", String(impression.impression_id));
      stars.forEach(function (b) { b.classList.remove("chosen"); });
      if (document.activeElement && document.activeElement.blur) document.activeElement.blur();
      setState("ready");
      upcoming = fetchImpression();
      upcoming.catch(function () { upcoming = null; });
    }).catch(function (error) {
      current = null;
      setState("empty", error.message === "paused"
        ? "Nothing to rate right now. Trying again shortly…"
        : "Could not reach the server. Trying again shortly…");
      setTimeout(next, 5000);
    });
  }

  function answer(kind, value, button) {
    if (busy || !current) return;
    busy = true;
    var token = current.token;
    if (button) button.classList.add("chosen");
    fetch("/v1/interactions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token, kind: kind, value: value })
    }).then(function (response) {
      if (response.ok && kind === "rating") {
        rated += 1;
        store(COUNT_KEY, String(rated));
        showCount();
      }
    }).catch(function () { /* the next answer may get through */ }).then(function () {
      busy = false;
      next();
    });
  }

  stars.forEach(function (button) {
    button.addEventListener("click", function () {
      answer("rating", parseInt(button.getAttribute("data-stars"), 10), button);
    });
  });
  skip.addEventListener("click", function () { answer("skip", 1, null); });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key >= "1" && event.key <= "5") {
      var stars_ = parseInt(event.key, 10);
      answer("rating", stars_, stars[stars_ - 1]);
      event.preventDefault();
    } else if (event.key === "s" || event.key === "S" || event.key === "0") {
      answer("skip", 1, null);
      event.preventDefault();
    }
  });

  next();
})();
