// Draws a Synod run from the JSON beside this script: lanes, faults, messages, operations,
// latency. Written for synod-sim's timeline page; no library, nothing fetched.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  var LEFT = 70, RIGHT = 12, AXIS = 22, LANE = 30, GAP = 6, OPROW = 7, LAT = 130;
  var MESSAGES_DRAWN_MAX = 4000;
  var ROLE_COLOURS = {
    leader: "#1f5fbf", candidate: "#f08c00", "pre-candidate": "#f5c26b", follower: "#a9c8ec",
    learner: "#b39ddb", replica: "#7fb88f", member: "#7fb88f", down: "#37474f", none: "#eceff1"
  };
  var PALETTE = ["#8e6cc9", "#4aa3a2", "#c97b6c", "#8aa13c", "#c46aa6", "#6c8ec9"];
  var roleColour = {};
  D.roleNames.forEach(function (name, i) {
    roleColour[i] = ROLE_COLOURS[name] || PALETTE[i % PALETTE.length];
  });
  var clients = 0;
  D.ops.forEach(function (o) { clients = Math.max(clients, o[1] + 1); });
  var CLIENT_ROWS_MAX = 48;
  var rows = Math.min(clients, CLIENT_ROWS_MAX);
  var lanesTop = AXIS;
  var opsTop = lanesTop + D.nodes * LANE + GAP;
  var latTop = opsTop + Math.max(rows, 1) * OPROW + GAP + 14;
  var height = latTop + LAT + 18;
  var end = Math.max(D.end, 1);
  var view = D.focus ? [Math.max(0, D.focus[0]), Math.min(end, D.focus[1])] : [0, end];
  var hidden = {};
  var chart = document.getElementById("chart");

  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;");
  }
  function trim(s) { return s.indexOf(".") < 0 ? s : s.replace(/0+$/, "").replace(/\.$/, ""); }
  function fmt(us) {
    us = Math.round(us);
    if (us >= 1e6) return trim((us / 1e6).toFixed(6)) + "s";
    if (us >= 1e3) return trim((us / 1e3).toFixed(3)) + "ms";
    return us + "us";
  }
  function laneY(node) { return lanesTop + (node - 1) * LANE; }

  // Role spans per node, from the changes in time order.
  var spans = [];
  (function () {
    var last = {};
    D.roles.forEach(function (r) {
      var prev = last[r[0]];
      if (prev) spans.push([prev[0], prev[1], r[1], prev[2], prev[3]]);
      last[r[0]] = r;
    });
    Object.keys(last).forEach(function (k) {
      var r = last[k];
      spans.push([r[0], r[1], end, r[2], r[3]]);
    });
  })();

  // Verdict, controls, legend, fault list: drawn once.
  var verdict = document.getElementById("verdict");
  if (D.verdict) {
    verdict.className = "verdict-" + D.verdict.kind;
    verdict.textContent = "verdict: " + D.verdict.text;
  } else {
    verdict.textContent = "verdict: not checked";
  }
  var controls = document.getElementById("controls");
  var html = "<button id=\"fit\">whole run</button>";
  if (D.focus) html += "<button id=\"culprit\">culprit</button>";
  html += "<span class=\"note\">wheel: zoom, drag: pan</span><span>messages:</span>";
  D.kinds.forEach(function (k, i) {
    html += "<label><input type=\"checkbox\" class=\"kind\" data-kind=\"" + i + "\" checked> " +
      esc(k) + " (" + D.kindCounts[i] + ")</label>";
  });
  var shown = D.messages.length;
  html += "<span class=\"note\" id=\"msgnote\">" + D.messagesTotal + " messages";
  if (D.messageStride > 1) html += ", 1 in " + D.messageStride + " kept (" + shown + ")";
  html += "; " + D.opsTotal + " operations";
  if (D.opStride > 1) html += ", 1 in " + D.opStride + " drawn";
  html += "</span>";
  controls.innerHTML = html;
  var legend = document.getElementById("legend");
  var lg = "";
  D.roleNames.forEach(function (name, i) {
    lg += "<span><span class=\"sw\" style=\"background:" + roleColour[i] + "\"></span>" + esc(name) + "</span>";
  });
  [["#3a9d5d", "op ok"], ["#c0392b", "op failed"], ["#e8a33d", "op unknown"], ["#e0007a", "culprit"],
   ["#7e57c2", "partition"], ["#c0392b", "loss"], ["#1e88e5", "duplication"], ["#00897b", "reordering"],
   ["#6d4c41", "clog"], ["#90a4ae", "paused"], ["#b71c1c", "crash"], ["#2e7d32", "restart"],
   ["#8e24aa", "clock"], ["#1d2330", "commit"], ["#ffd54f", "snapshot"]].forEach(function (e) {
    lg += "<span><span class=\"sw\" style=\"background:" + e[0] + "\"></span>" + e[1] + "</span>";
  });
  legend.innerHTML = lg;
  var faults = document.getElementById("faults");
  var fl = "";
  if (D.faultsDropped > 0) fl += "<li class=\"note\">(" + D.faultsDropped + " earlier faults not kept)</li>";
  D.faults.forEach(function (f) {
    fl += "<li class=\"fault\" data-at=\"" + f[0] + "\">" + esc(f[1]) + "</li>";
  });
  if (!D.faults.length) fl += "<li class=\"note\">(none)</li>";
  faults.innerHTML = fl;

  function draw() {
    var width = Math.max(chart.clientWidth, 400);
    var plot = width - LEFT - RIGHT;
    var t0 = view[0], t1 = Math.max(view[1], view[0] + 1), k = plot / (t1 - t0);
    function x(t) { return LEFT + (t - t0) * k; }
    function clipX(t) { return Math.max(LEFT - 2, Math.min(width - RIGHT + 2, x(t))); }
    function visible(a, b) { return b >= t0 && a <= t1; }
    var s = [];
    s.push("<svg width=\"" + width + "\" height=\"" + height + "\">");
    s.push("<defs><clipPath id=\"plot\"><rect x=\"" + LEFT + "\" y=\"0\" width=\"" + plot + "\" height=\"" + height + "\"/></clipPath></defs>");
    // Axis: about ten ticks.
    var step = Math.pow(10, Math.floor(Math.log10((t1 - t0) / 8)));
    [1, 2, 5, 10].some(function (m) { if ((t1 - t0) / (step * m) <= 10) { step *= m; return true; } return false; });
    s.push("<g class=\"axis\">");
    for (var t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      s.push("<line x1=\"" + x(t) + "\" x2=\"" + x(t) + "\" y1=\"" + (AXIS - 4) + "\" y2=\"" + height + "\"/>");
      s.push("<text x=\"" + (x(t) + 2) + "\" y=\"" + (AXIS - 8) + "\">" + fmt(t) + "</text>");
    }
    s.push("</g><g clip-path=\"url(#plot)\">");
    // Fault regions over every lane (and the latency plot), or one node's lane.
    D.regions.forEach(function (r) {
      if (!visible(r[1], r[2])) return;
      var x0 = clipX(r[1]), w = Math.max(clipX(r[2]) - x0, 1.5);
      var tip = esc(r[4] + "\n" + fmt(r[1]) + " .. " + fmt(r[2]));
      if (r[3].length === 0) {
        s.push("<rect class=\"region region-" + r[0] + "\" data-kind=\"" + r[0] + "\" x=\"" + x0 + "\" y=\"" + lanesTop + "\" width=\"" + w + "\" height=\"" + (height - lanesTop) + "\" data-tip=\"" + tip + "\"/>");
      } else {
        r[3].forEach(function (n) {
          s.push("<rect class=\"region region-" + r[0] + "\" data-kind=\"" + r[0] + "\" x=\"" + x0 + "\" y=\"" + (laneY(n) + LANE - 9) + "\" width=\"" + w + "\" height=\"7\" data-tip=\"" + tip + "\"/>");
        });
      }
    });
    // The culprit's stretch of time, across everything.
    D.ops.forEach(function (o) {
      if (o[5] !== 2) return;
      var e = o[3] < 0 ? end : o[3];
      s.push("<rect class=\"culprit-span\" x=\"" + clipX(o[2]) + "\" y=\"" + lanesTop + "\" width=\"" + Math.max(clipX(e) - clipX(o[2]), 3) + "\" height=\"" + (height - lanesTop) + "\"/>");
      s.push("<line class=\"culprit-line\" x1=\"" + x(o[2]) + "\" x2=\"" + x(o[2]) + "\" y1=\"" + lanesTop + "\" y2=\"" + height + "\"/>");
      s.push("<text class=\"culprit-label\" x=\"" + (x(o[2]) + 4) + "\" y=\"" + (opsTop - 3) + "\">culprit #" + o[0] + "</text>");
    });
    // Role bands.
    spans.forEach(function (sp) {
      if (!visible(sp[1], sp[2])) return;
      var x0 = clipX(sp[1]), w = Math.max(clipX(sp[2]) - x0, 0.5), y = laneY(sp[0]) + 3;
      var name = D.roleNames[sp[3]];
      var tip = esc("n" + sp[0] + " " + name + (sp[4] ? " term " + sp[4] : "") + "\n" + fmt(sp[1]) + " .. " + fmt(sp[2]));
      s.push("<g class=\"band role-" + esc(name) + "\" data-role=\"" + esc(name) + "\" data-node=\"" + sp[0] + "\"><rect x=\"" + x0 + "\" y=\"" + y + "\" width=\"" + w + "\" height=\"" + (LANE - 13) + "\" fill=\"" + roleColour[sp[3]] + "\" data-tip=\"" + tip + "\"/>");
      if (w > 40 && sp[4]) s.push("<text x=\"" + (x0 + 3) + "\" y=\"" + (y + 12) + "\">t" + sp[4] + "</text>");
      s.push("</g>");
    });
    // Commit and snapshot marks.
    D.marks.forEach(function (m) {
      if (!visible(m[1], m[1])) return;
      var y = laneY(m[0]) + LANE - 10;
      var tip = esc("n" + m[0] + (m[2] ? " snapshot through " : " committed through ") + m[3] + " at " + fmt(m[1]));
      if (m[2]) s.push("<rect class=\"mark mark-snapshot\" x=\"" + (x(m[1]) - 3) + "\" y=\"" + (y - 1) + "\" width=\"6\" height=\"6\" data-tip=\"" + tip + "\"/>");
      else s.push("<line class=\"mark mark-commit\" x1=\"" + x(m[1]) + "\" x2=\"" + x(m[1]) + "\" y1=\"" + y + "\" y2=\"" + (y + 5) + "\" data-tip=\"" + tip + "\"/>");
    });
    // Messages, sampled further if the view holds too many.
    var inView = [];
    D.messages.forEach(function (m) {
      if (hidden[m[4]]) return;
      var arrive = m[3] >= 0 ? m[3] : m[2] + (t1 - t0) / 60;
      if (visible(m[2], arrive)) inView.push(m);
    });
    var every = Math.max(1, Math.ceil(inView.length / MESSAGES_DRAWN_MAX));
    for (var i = 0; i < inView.length; i += every) {
      var m = inView[i];
      var lost = m[3] < 0;
      var arrive = lost ? m[2] + (t1 - t0) / 60 : m[3];
      var y1 = laneY(m[0]) + LANE / 2, y2 = laneY(m[1]) + LANE / 2;
      if (lost) y2 = y1 + (y2 - y1) / 2;
      var tip = esc(D.kinds[m[4]] + " n" + m[0] + " -> n" + m[1] + "\nsent " + fmt(m[2]) +
        (m[3] === -1 ? ", lost" : m[3] === -2 ? ", cut by a partition" : ", arrives " + fmt(m[3])));
      s.push("<line class=\"msg" + (m[3] === -1 ? " lost" : m[3] === -2 ? " cut" : "") + "\" data-kind=\"" + esc(D.kinds[m[4]]) + "\" x1=\"" + x(m[2]) + "\" y1=\"" + y1 + "\" x2=\"" + x(arrive) + "\" y2=\"" + y2 + "\" data-tip=\"" + tip + "\"/>");
    }
    // Crashes, restarts, pauses, clock steps: marks on the lanes.
    D.nodeEvents.forEach(function (e) {
      if (!visible(e[1], e[1])) return;
      var cx = x(e[1]), y = laneY(e[0]) + 2;
      s.push("<path class=\"event event-" + e[2] + "\" data-kind=\"" + e[2] + "\" d=\"M" + (cx - 5) + " " + y + "h10l-5 9z\" data-tip=\"" + esc(e[3] + "\nat " + fmt(e[1])) + "\"/>");
    });
    // Operations: one row per client, from invocation to completion.
    D.ops.forEach(function (o) {
      var e = o[3] < 0 ? end : o[3];
      if (!visible(o[2], e)) return;
      var cls = "op " + ["op-ok", "op-fail", "op-unknown"][o[4]] + (o[5] === 2 ? " culprit" : o[5] === 1 ? " involved" : "");
      var y = opsTop + (o[1] % CLIENT_ROWS_MAX) * OPROW + 1;
      var tip = esc("#" + o[0] + " client " + o[1] + ": " + o[6] + "\n" + fmt(o[2]) + " .. " + (o[3] < 0 ? "no answer" : fmt(o[3]) + " (" + fmt(o[3] - o[2]) + ")"));
      s.push("<rect class=\"" + cls + "\" data-op=\"" + o[0] + "\" x=\"" + clipX(o[2]) + "\" y=\"" + y + "\" width=\"" + Math.max(clipX(e) - clipX(o[2]), 1.5) + "\" height=\"" + (OPROW - 2) + "\" data-tip=\"" + tip + "\"/>");
    });
    // Latency over time: each drawn operation, and the worst of every slice.
    var worst = 1;
    D.latency.forEach(function (l) { worst = Math.max(worst, l[0]); });
    var ly = function (us) { return latTop + LAT - Math.log(1 + us) / Math.log(1 + worst) * LAT; };
    D.ops.forEach(function (o) {
      if (o[3] < 0 || !visible(o[2], o[2])) return;
      var fill = o[5] === 2 ? "#e0007a" : ["#3a9d5d", "#c0392b", "#e8a33d"][o[4]];
      s.push("<circle class=\"lat\" cx=\"" + x(o[2]) + "\" cy=\"" + ly(o[3] - o[2]) + "\" r=\"" + (o[5] === 2 ? 4 : 1.8) + "\" fill=\"" + fill + "\" data-tip=\"" + esc("#" + o[0] + " " + o[6] + "\nlatency " + fmt(o[3] - o[2])) + "\"/>");
    });
    var pts = [];
    D.latency.forEach(function (l, i) {
      if (!l[0]) return;
      var t = end * i / (D.latency.length - 1);
      if (visible(t, t)) pts.push(x(t) + "," + ly(l[0]));
    });
    if (pts.length > 1) s.push("<polyline class=\"lat-worst\" points=\"" + pts.join(" ") + "\"/>");
    s.push("</g>");
    // Lane labels and frames.
    for (var n = 1; n <= D.nodes; n++) {
      s.push("<g class=\"lane\" data-node=\"" + n + "\"><line x1=\"" + LEFT + "\" x2=\"" + (width - RIGHT) + "\" y1=\"" + (laneY(n) + LANE) + "\" y2=\"" + (laneY(n) + LANE) + "\" stroke=\"#e4e7ec\"/><text class=\"lane-label\" x=\"6\" y=\"" + (laneY(n) + LANE / 2 + 4) + "\">node n" + n + "</text></g>");
    }
    s.push("<text class=\"lane-label\" x=\"6\" y=\"" + (opsTop + 9) + "\">clients</text>");
    s.push("<text class=\"lane-label\" x=\"6\" y=\"" + (latTop + 10) + "\">latency</text>");
    s.push("<text class=\"axis\" x=\"6\" y=\"" + (latTop + 24) + "\" font-size=\"10\" fill=\"#555\">max " + fmt(worst) + "</text>");
    s.push("<text class=\"axis\" x=\"6\" y=\"" + (latTop + LAT) + "\" font-size=\"10\" fill=\"#555\">log scale</text>");
    s.push("</svg>");
    chart.innerHTML = s.join("");
    chart.setAttribute("data-view-start", String(Math.round(t0)));
    chart.setAttribute("data-view-end", String(Math.round(t1)));
  }

  function setView(a, b) {
    var span = Math.max(b - a, 10);
    if (span > end) { a = 0; b = end; } else {
      a = Math.max(0, Math.min(a, end - span));
      b = a + span;
    }
    view = [a, b];
    draw();
  }
  chart.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var r = chart.getBoundingClientRect();
    var plot = r.width - LEFT - RIGHT;
    var f = Math.max(0, Math.min(1, (ev.clientX - r.left - LEFT) / plot));
    var at = view[0] + f * (view[1] - view[0]);
    var scale = ev.deltaY < 0 ? 0.8 : 1.25;
    var span = (view[1] - view[0]) * scale;
    setView(at - f * span, at - f * span + span);
  }, { passive: false });
  var dragging = null;
  chart.addEventListener("mousedown", function (ev) { dragging = [ev.clientX, view[0], view[1]]; });
  window.addEventListener("mouseup", function () { dragging = null; });
  var tipBox = document.getElementById("tip");
  window.addEventListener("mousemove", function (ev) {
    if (dragging) {
      var plot = chart.clientWidth - LEFT - RIGHT;
      var dt = (ev.clientX - dragging[0]) / plot * (dragging[2] - dragging[1]);
      setView(dragging[1] - dt, dragging[2] - dt);
      return;
    }
    var tip = ev.target && ev.target.getAttribute && ev.target.getAttribute("data-tip");
    if (tip) {
      tipBox.textContent = tip;
      tipBox.hidden = false;
      tipBox.style.left = (ev.clientX + 12) + "px";
      tipBox.style.top = (ev.clientY + 12) + "px";
    } else {
      tipBox.hidden = true;
    }
  });
  document.getElementById("fit").addEventListener("click", function () { setView(0, end); });
  if (D.focus) document.getElementById("culprit").addEventListener("click", function () { setView(D.focus[0], D.focus[1]); });
  Array.prototype.forEach.call(document.querySelectorAll("input.kind"), function (box) {
    box.addEventListener("change", function () {
      hidden[box.getAttribute("data-kind")] = !box.checked;
      draw();
    });
  });
  faults.addEventListener("click", function (ev) {
    var at = ev.target.getAttribute && Number(ev.target.getAttribute("data-at"));
    if (!isNaN(at) && ev.target.getAttribute("data-at")) {
      var span = Math.min(end, Math.max((view[1] - view[0]) / 4, 2000));
      setView(at - span / 2, at + span / 2);
    }
  });
  window.addEventListener("resize", draw);
  draw();
})();
