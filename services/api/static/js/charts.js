// Charts of the release page, drawn with Chart.js (/static/vendor/chart.umd.min.js, installed by
// deploy/components/dashboard.sh). Without the library the page keeps its tables and says the charts are missing.

const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4b5563"];
const charts = new Map(); // canvas id -> Chart, updated in place on every re-render

export const available = () => typeof window.Chart === "function";

function draw(canvas, config) {
  const existing = charts.get(canvas.id);
  if (existing && existing.canvas === canvas) {
    existing.data = config.data;
    existing.options = config.options;
    existing.update("none");
    return existing;
  }
  existing?.destroy();
  const chart = new window.Chart(canvas, config);
  charts.set(canvas.id, chart);
  return chart;
}

const clock = (ms) => new Date(ms).toLocaleTimeString();

// Weights per version over time, as a stepped stacked area (each step holds until the next change).
export function trafficChart(canvas, traffic, until) {
  const points = traffic.map((t) => ({ x: Date.parse(t.at), weights: t.weights || {} })).filter((p) => !Number.isNaN(p.x));
  if (!points.length) return null;
  const end = Math.max(until, points[points.length - 1].x);
  const versions = [...new Set(points.flatMap((p) => Object.keys(p.weights)))].sort();
  const datasets = versions.map((version, i) => ({
    label: version,
    data: [...points, { x: end, weights: points[points.length - 1].weights }].map((p) => ({ x: p.x, y: p.weights[version] ?? 0 })),
    stepped: "before",
    fill: i === 0 ? "origin" : "-1",
    borderColor: PALETTE[i % PALETTE.length],
    backgroundColor: `${PALETTE[i % PALETTE.length]}55`,
    pointRadius: 2,
  }));
  return draw(canvas, {
    type: "line",
    data: { datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: true,
      scales: {
        x: { type: "linear", ticks: { callback: clock, maxTicksLimit: 8 }, title: { display: true, text: "time" } },
        y: { stacked: true, min: 0, max: 100, title: { display: true, text: "% of traffic" } },
      },
      plugins: { tooltip: { callbacks: { title: (items) => (items.length ? clock(items[0].parsed.x) : "") } } },
    },
  });
}

// One KPI: candidate vs stable per verification (left axis), the test statistic vs its decision boundary (right).
export function kpiChart(canvas, name, looks) {
  const labels = looks.map((l) => l.label);
  const series = (key, label, color, axis, dash) => ({
    label,
    data: looks.map((l) => (typeof l.kpi[key] === "number" ? l.kpi[key] : null)),
    borderColor: color,
    backgroundColor: color,
    yAxisID: axis,
    borderDash: dash ? [6, 4] : [],
    spanGaps: true,
  });
  const hasTest = looks.some((l) => typeof l.kpi.statistic === "number" || typeof l.kpi.boundary === "number");
  const datasets = [
    series("candidate", "candidate", PALETTE[0], "y", false),
    series("stable", "stable", PALETTE[1], "y", false),
  ];
  if (hasTest) {
    datasets.push(series("statistic", "test statistic", PALETTE[2], "test", true));
    datasets.push(series("boundary", "decision boundary", PALETTE[4], "test", true));
  }
  return draw(canvas, {
    type: "line",
    data: { labels, datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      plugins: { title: { display: true, text: name } },
      scales: {
        y: { position: "left", title: { display: true, text: name } },
        ...(hasTest ? { test: { position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "statistic" } } } : {}),
      },
    },
  });
}
