import { ACTIVITY_SERIES, type ActivityDay, type ActivitySeries } from '../flows/console-dashboard.ts';

export interface BarChart {
  width: number;
  height: number;
  /** The y axis: gridlines with their value. */
  ticks: { y: number; value: number }[];
  bars: { x: number; y: number; width: number; height: number; series: ActivitySeries; value: number; day: string }[];
  labels: { x: number; y: number; text: string }[];
}

/**
 * The geometry of a grouped bar chart (one group per day, one bar per series), drawn by the
 * dashboard template as SVG on the server: no script, nothing the CSP would have to allow.
 */
export function barChart(days: readonly ActivityDay[], size = { width: 720, height: 240 }): BarChart {
  const left = 36;
  const bottom = 28;
  const top = 10;
  const plotHeight = size.height - top - bottom;
  const max = Math.max(1, ...days.flatMap((d) => ACTIVITY_SERIES.map((s) => d[s])));
  // Round the scale up to 1, 2 or 5 × 10^n so the gridlines read well.
  const magnitude = 10 ** Math.floor(Math.log10(max));
  // Small counts get whole-number gridlines (0..4), never 0.25 of an event.
  const niceMax = max <= 4 ? 4 : ([1, 2, 5, 10].map((m) => m * magnitude).find((v) => v >= max) ?? max);
  const scale = (v: number) => (v / niceMax) * plotHeight;
  const groupWidth = (size.width - left) / Math.max(1, days.length);
  const barWidth = Math.max(2, (groupWidth - 6) / ACTIVITY_SERIES.length);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => ({ y: top + plotHeight - f * plotHeight, value: Math.round(f * niceMax * 100) / 100 }));
  const bars: BarChart['bars'] = [];
  const labels: BarChart['labels'] = [];
  days.forEach((d, i) => {
    const x0 = left + i * groupWidth + 3;
    ACTIVITY_SERIES.forEach((s, j) => {
      const h = scale(d[s]);
      bars.push({ x: round(x0 + j * barWidth), y: round(top + plotHeight - h), width: round(barWidth - 1), height: round(h), series: s, value: d[s], day: d.day });
    });
    // Every other day is labelled when there are many, so the labels never overlap.
    if (days.length <= 10 || i % 2 === 0) labels.push({ x: round(x0 + (groupWidth - 6) / 2), y: size.height - 8, text: d.day.slice(5) });
  });
  return { width: size.width, height: size.height, ticks, bars, labels };
}

function round(v: number): number {
  return Math.round(v * 10) / 10;
}
