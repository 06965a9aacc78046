// Glue between the site's static pages and plotly.js (vendored next to them); no plotting here.
// - a chart is drawn when it scrolls near the viewport: its figure comes from data/<id>.js, a
//   script (not JSON through fetch, which browsers refuse for pages opened from disk);
// - the run checkboxes show and hide a run on every chart and video of the page, remembered
//   across the site's pages;
// - rollout players keep their videos on one clock, with scrubbing and a timeline cursor.
"use strict";

const MilliVid = (() => {
  const storeKey = () => "millivid-site-runs:" + document.body.dataset.site;

  function selectedRuns() {
    return new Set([...document.querySelectorAll("input.run-toggle:checked")].map((box) => box.value));
  }

  // A line or video of several runs (one cached result) shows while any of them is selected.
  const shown = (runs, selected) => runs.some((run) => selected.has(run));

  const hasToggles = () => document.querySelector("input.run-toggle") !== null;  // none on a one-run site

  function applyRuns(div) {
    if (!hasToggles() || !div.data || !div.data.some((trace) => trace.meta && trace.meta.runs)) return;
    const selected = selectedRuns();
    const visible = div.data.map((trace) => {
      if (!trace.meta || !trace.meta.runs) return trace.visible;
      if (!shown(trace.meta.runs, selected)) return false;
      return trace.visible === "legendonly" ? "legendonly" : true;
    });
    Plotly.restyle(div, { visible });
  }

  function applyRunsEverywhere() {
    if (!hasToggles()) return;
    const selected = selectedRuns();
    document.querySelectorAll(".chart[data-drawn]").forEach(applyRuns);
    document.querySelectorAll("[data-runs]").forEach((element) => {
      element.hidden = !shown(element.dataset.runs.split(" "), selected);
      if (element.hidden) element.querySelectorAll("video").forEach((video) => video.pause());
    });
  }

  function initRunToggles() {
    const boxes = [...document.querySelectorAll("input.run-toggle")];
    let stored = null;
    try { stored = JSON.parse(localStorage.getItem(storeKey())); } catch (error) { stored = null; }
    if (Array.isArray(stored)) boxes.forEach((box) => { box.checked = stored.includes(box.value); });
    boxes.forEach((box) => box.addEventListener("change", () => {
      try { localStorage.setItem(storeKey(), JSON.stringify([...selectedRuns()])); } catch (error) { /* storage off */ }
      applyRunsEverywhere();
    }));
    applyRunsEverywhere();
  }

  // Called by data/<id>.js with the figure (data, layout, config, frames).
  function chart(id, figure) {
    const div = document.getElementById(id);
    Plotly.newPlot(div, figure).then(() => {
      div.dataset.drawn = "true";
      applyRuns(div);
      div.dispatchEvent(new Event("chart-drawn"));
    });
  }

  function loadChart(div) {
    const script = document.createElement("script");
    script.src = div.dataset.src;
    script.onerror = () => console.error("chart data missing: " + div.dataset.src);
    document.head.appendChild(script);
  }

  function initCharts() {
    const observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (entry.isIntersecting) { observer.unobserve(entry.target); loadChart(entry.target); }
      }
    }, { rootMargin: "300px" });
    document.querySelectorAll(".chart[data-src]").forEach((div) => observer.observe(div));
  }

  function initPlayer(section) {
    const fps = Number(section.dataset.fps), frames = Number(section.dataset.frames);
    const shown = Number(section.dataset.contextShown), context = Number(section.dataset.context);
    const revisitOf = new Map(JSON.parse(section.dataset.revisits));
    const revisitFrames = [...revisitOf.keys()].sort((a, b) => a - b);
    const slider = section.querySelector("input.scrub"), position = section.querySelector(".position");
    const playButton = section.querySelector("[data-action=play]"), timeline = section.querySelector(".timeline");
    const videos = () => [...section.querySelectorAll("figure:not([hidden]) video")];
    let playing = false, current = -1;

    function describe(frame) {
      const where = frame < shown ? `context frame ${context - shown + frame}` : `rollout frame ${frame - shown}`;
      const revisit = revisitOf.has(frame) ? ` · revisits context frame ${revisitOf.get(frame)}` : "";
      return `video frame ${frame + 1}/${frames} · ${where}${revisit}`;
    }
    function show(frame) {
      if (frame === current) return;
      current = frame;
      slider.value = frame;
      position.textContent = describe(frame);
      if (timeline.dataset.drawn) Plotly.relayout(timeline, { "shapes[1].x0": frame, "shapes[1].x1": frame });
    }
    function seek(frame) {
      frame = Math.max(0, Math.min(frames - 1, frame));
      videos().forEach((video) => { video.currentTime = (frame + 0.5) / fps; });
      show(frame);
    }
    function setPlaying(value) {
      playing = value;
      playButton.textContent = playing ? "❚❚ pause" : "▶ play";
      videos().forEach((video) => (playing ? video.play().catch((error) => console.warn(error.message)) : video.pause()));
      if (playing) requestAnimationFrame(tick);
    }
    function tick() {  // the first visible video leads; the others follow within half a frame
      const [lead, ...rest] = videos();
      if (!lead) return;
      rest.forEach((video) => { if (Math.abs(video.currentTime - lead.currentTime) > 0.5 / fps) video.currentTime = lead.currentTime; });
      show(Math.min(frames - 1, Math.floor(lead.currentTime * fps)));
      if (lead.ended) setPlaying(false);
      else if (playing) requestAnimationFrame(tick);
    }
    const actions = {
      play: () => setPlaying(!playing),
      previous: () => { setPlaying(false); seek(current - 1); },
      next: () => { setPlaying(false); seek(current + 1); },
      revisit: () => {
        setPlaying(false);
        const next = revisitFrames.find((frame) => frame > current);
        seek(next === undefined ? (revisitFrames[0] ?? 0) : next);
      },
    };
    section.querySelectorAll("button[data-action]").forEach((button) => button.addEventListener("click", actions[button.dataset.action]));
    slider.addEventListener("input", () => { setPlaying(false); seek(Number(slider.value)); });
    timeline.addEventListener("chart-drawn", () => {
      timeline.on("plotly_click", (event) => { setPlaying(false); seek(Math.round(event.points[0].x)); });
      const frame = current; current = -1; show(Math.max(frame, 0));
    });
    show(0);
  }

  document.addEventListener("DOMContentLoaded", () => {
    initRunToggles();
    initCharts();
    document.querySelectorAll("section.player").forEach(initPlayer);
  });

  return { chart };
})();
