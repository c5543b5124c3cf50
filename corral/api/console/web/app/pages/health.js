// The node at a glance: live sandboxes, creates per minute and their mean latency,
// memory; read from GET /api/node every 2 s and charted (uPlot) over the last minutes.
import { html, useEffect, useRef, useState } from "../html.js";
import uPlot from "uplot";
import { api } from "../api.js";
import { Notice } from "../ui.js";

const KEEP = 150; // points: 5 minutes at 2 s

function Chart({ title, id, series, data }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const width = Math.max(280, box.current.clientWidth);
    plot.current = new uPlot(
      {
        width,
        height: 180,
        series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2 }))],
        axes: [{}, { size: 60 }],
        legend: { live: false },
      },
      data,
      box.current,
    );
    const observer = new ResizeObserver(() => plot.current.setSize({ width: Math.max(280, box.current.clientWidth), height: 180 }));
    observer.observe(box.current);
    return () => {
      observer.disconnect();
      plot.current.destroy();
    };
  }, []);
  useEffect(() => plot.current?.setData(data), [data]);
  return html`<figure class="chart" id=${id}><figcaption>${title}</figcaption><div ref=${box}></div></figure>`;
}

export function Health() {
  const [points, setPoints] = useState([]);
  const [error, setError] = useState(null);
  useEffect(() => {
    let stopped = false;
    let timer;
    const read = async () => {
      try {
        const now = await api.get("/api/node");
        if (stopped) return;
        setError(null);
        setPoints((old) => [...old, now].slice(-KEEP));
      } catch (e) {
        if (!stopped) setError(e);
        if (e.status === 401) return;
      }
      if (!stopped) timer = setTimeout(read, 2000);
    };
    read();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);
  const last = points[points.length - 1];
  const times = points.map((p) => p.at);
  const rate = points.map((p, i) => (i ? (60 * (p.creates - points[i - 1].creates)) / Math.max(0.001, p.at - points[i - 1].at) : 0));
  const latency = points.map((p, i) => {
    const before = points[i - 1];
    const count = before ? p.createSecondsCount - before.createSecondsCount : 0;
    return count ? (1000 * (p.createSecondsSum - before.createSecondsSum)) / count : null;
  });
  const used = points.map((p) => p.memoryTotalMB - p.memoryAvailableMB);
  const mean = last && last.createSecondsCount ? (1000 * last.createSecondsSum) / last.createSecondsCount : null;
  return html`
    <section>
      <div class="title"><h1>Health</h1><span class="live">every 2 s</span></div>
      <${Notice} error=${error} />
      ${last
        ? html`<div class="tiles" id="tiles">
              <div class="tile"><span class="n" id="live-count">${last.liveSandboxes}</span><span>live sandboxes</span></div>
              <div class="tile"><span class="n">${last.creates}</span><span>creates since start</span></div>
              <div class="tile"><span class="n">${mean === null ? "—" : `${mean.toFixed(0)} ms`}</span><span>mean create latency</span></div>
              <div class="tile"><span class="n">${(used[used.length - 1] / 1024).toFixed(1)} / ${(last.memoryTotalMB / 1024).toFixed(1)} GiB</span><span>host memory used</span></div>
              <div class="tile"><span class="n">${(last.memoryPromisedMB / 1024).toFixed(1)} GiB</span><span>promised to sandboxes</span></div>
            </div>
            <div class="charts">
              <${Chart} id="chart-live" title="Live sandboxes" series=${[["live", "#2563eb"]]} data=${[times, points.map((p) => p.liveSandboxes)]} />
              <${Chart} id="chart-rate" title="Creates per minute" series=${[["creates/min", "#059669"]]} data=${[times, rate]} />
              <${Chart} id="chart-latency" title="Create latency (ms, mean per interval)" series=${[["ms", "#d97706"]]} data=${[times, latency]} />
              <${Chart} id="chart-memory" title="Memory (MiB)" series=${[["host used", "#7c3aed"], ["promised", "#db2777"]]} data=${[times, used, points.map((p) => p.memoryPromisedMB)]} />
            </div>`
        : !error && html`<div class="loading">Loading…</div>`}
    </section>`;
}
