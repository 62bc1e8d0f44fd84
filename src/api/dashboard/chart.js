// Line charts of the recent past, drawn as hand-written SVG: no chart library, no canvas,
// nothing fetched. The page keeps the samples; this module only draws them.

const SVG_NS = 'http://www.w3.org/2000/svg';
const WIDTH = 640;
const HEIGHT = 170;
const PAD = { left: 46, right: 12, top: 10, bottom: 24 };
const MINUTE_MS = 60_000;

/**
 * Redraws `svg` with `series` (each `{ key, points: [{ at, value }] }`, `at` in ms since
 * the epoch, `value` null for a gap) over the `windowMs` before `now`. Each path carries
 * its series' key and newest value as `data-series` and `data-latest`.
 */
export function drawChart(svg, { series, windowMs, now, format }) {
  const start = now - windowMs;
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const visible = series.map((line) => ({ ...line, points: line.points.filter((point) => point.at >= start) }));
  const values = visible.flatMap((line) => line.points.map((point) => point.value).filter((value) => value !== null));
  const top = niceCeiling(Math.max(1, ...values));
  const x = (at) => PAD.left + ((at - start) / windowMs) * plotWidth;
  const y = (value) => PAD.top + plotHeight - (value / top) * plotHeight;

  svg.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
  svg.replaceChildren();
  for (const fraction of [0, 0.5, 1]) {
    const level = y(top * fraction);
    svg.append(
      element('line', { class: 'grid', x1: PAD.left, x2: WIDTH - PAD.right, y1: level, y2: level }),
      element('text', { class: 'axis', x: PAD.left - 6, y: level + 4, 'text-anchor': 'end' }, format(top * fraction)),
    );
  }
  const minutes = windowMs / MINUTE_MS;
  for (let ago = minutes; ago >= 0; ago -= 5) {
    const anchor = ago === minutes ? 'start' : ago === 0 ? 'end' : 'middle';
    svg.append(element('text', { class: 'axis', x: x(now - ago * MINUTE_MS), y: HEIGHT - 6, 'text-anchor': anchor },
      ago === 0 ? 'now' : `−${ago} min`));
  }
  for (const line of visible) {
    const latest = line.points.at(-1)?.value ?? null;
    svg.append(element('path', {
      class: `line line-${line.key}`,
      d: pathData(line.points, x, y),
      'data-series': line.key,
      'data-latest': latest === null ? '' : String(Math.round(latest * 100) / 100),
    }));
  }
  svg.dataset.samples = String(Math.max(0, ...visible.map((line) => line.points.length)));
}

/** Straight segments between samples, broken where a value is missing. */
function pathData(points, x, y) {
  const parts = [];
  let drawing = false;
  for (const { at, value } of points) {
    if (value === null) {
      drawing = false;
      continue;
    }
    const point = `${x(at).toFixed(1)} ${y(value).toFixed(1)}`;
    // A lone sample becomes a zero-length segment, which the round line cap shows as a dot.
    parts.push(drawing ? `L${point}` : `M${point} L${point}`);
    drawing = true;
  }
  return parts.join(' ');
}

/** The smallest of 1, 2, 4, 5 or 10 times a power of ten that is at least `value`. */
function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 4, 5, 10].find((candidate) => candidate * power >= value) ?? 10;
  return step * power;
}

function element(name, attributes, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}
