// A map drawn on a <canvas> without tiles: an equirectangular projection
// fitted to a set of points, a light street grid, and small marker helpers.
// The machine may be offline, so nothing here fetches anything.

const KM_PER_DEG = 111.32;

/** Great-circle distance in kilometres between two {lat, lon}. */
export function distanceKm(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const s = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371.0088 * Math.asin(Math.min(1, Math.sqrt(s)));
}

export const COLORS = {
  available: '#1a8f3c',
  offered: '#d97706',
  busy: '#2563eb',
  paused: '#6b7280',
  stale: '#aab1bb',
  restaurant: '#b42318',
  home: '#6d28d9',
  ground: '#e8ecf0',
  street: '#ffffff',
  avenueEdge: '#d3d9e0',
  label: '#1b2430',
  zone: '#0e7490',
};

export class CanvasMap {
  /** `draw(map)` is called after the streets on every repaint. */
  constructor(canvas, draw) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.drawLayers = draw;
    this.bounds = { minLat: -1, maxLat: 1, minLon: -1, maxLon: 1 };
    this.width = 0;
    this.height = 0;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  /** Fits the view to `points` ({lat, lon}) plus `marginKm` on every side. */
  fit(points, marginKm = 1) {
    if (points.length === 0) return;
    const lats = points.map((p) => p.lat);
    const lons = points.map((p) => p.lon);
    const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
    const dLat = marginKm / KM_PER_DEG;
    const dLon = marginKm / (KM_PER_DEG * Math.cos((midLat * Math.PI) / 180));
    this.bounds = {
      minLat: Math.min(...lats) - dLat,
      maxLat: Math.max(...lats) + dLat,
      minLon: Math.min(...lons) - dLon,
      maxLon: Math.max(...lons) + dLon,
    };
    this.layout();
  }

  /** True when `p` lies inside the fitted bounds. */
  contains(p) {
    const b = this.bounds;
    return p.lat >= b.minLat && p.lat <= b.maxLat && p.lon >= b.minLon && p.lon <= b.maxLon;
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    this.width = this.canvas.clientWidth;
    this.height = this.canvas.clientHeight;
    this.canvas.width = Math.max(1, Math.round(this.width * ratio));
    this.canvas.height = Math.max(1, Math.round(this.height * ratio));
    this.ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    this.layout();
    this.draw();
  }

  layout() {
    const b = this.bounds;
    this.centerLat = (b.minLat + b.maxLat) / 2;
    this.centerLon = (b.minLon + b.maxLon) / 2;
    // Equirectangular: a degree of longitude is cos(lat) of a degree of
    // latitude; one scale for both keeps the city's shape.
    this.kx = Math.cos((this.centerLat * Math.PI) / 180);
    const spanX = (b.maxLon - b.minLon) * this.kx;
    const spanY = b.maxLat - b.minLat;
    this.scale = Math.min(this.width / spanX, this.height / spanY) || 1;
  }

  /** Canvas pixels (CSS pixels) of a {lat, lon}. */
  project(p) {
    return {
      x: this.width / 2 + (p.lon - this.centerLon) * this.kx * this.scale,
      y: this.height / 2 - (p.lat - this.centerLat) * this.scale,
    };
  }

  unproject(x, y) {
    return {
      lat: this.centerLat - (y - this.height / 2) / this.scale,
      lon: this.centerLon + (x - this.width / 2) / (this.kx * this.scale),
    };
  }

  pixelsPerKm() {
    return this.scale / KM_PER_DEG;
  }

  draw() {
    if (!this.width || !this.height) return;
    this.drawStreets();
    this.drawScale();
    this.drawLayers?.(this);
  }

  /** A grid of streets in whole fractions of a kilometre; every fifth is an avenue. */
  drawStreets() {
    const { ctx, width, height } = this;
    ctx.fillStyle = COLORS.ground;
    ctx.fillRect(0, 0, width, height);
    const perKm = this.pixelsPerKm();
    const blockKm = [0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10].find((km) => km * perKm >= 24) ?? 10;
    const topLeft = this.unproject(0, 0);
    const bottomRight = this.unproject(width, height);
    const stepLat = blockKm / KM_PER_DEG;
    const stepLon = blockKm / (KM_PER_DEG * this.kx);
    const lines = [];
    for (let i = Math.floor(bottomRight.lat / stepLat); i * stepLat <= topLeft.lat; i++) {
      const y = this.project({ lat: i * stepLat, lon: this.centerLon }).y;
      lines.push({ avenue: i % 5 === 0, from: [0, y], to: [width, y] });
    }
    for (let i = Math.floor(topLeft.lon / stepLon); i * stepLon <= bottomRight.lon; i++) {
      const x = this.project({ lat: this.centerLat, lon: i * stepLon }).x;
      lines.push({ avenue: i % 5 === 0, from: [x, 0], to: [x, height] });
    }
    const stroke = (filter, color, lineWidth) => {
      ctx.strokeStyle = color;
      ctx.lineWidth = lineWidth;
      ctx.beginPath();
      for (const line of lines.filter(filter)) {
        ctx.moveTo(...line.from);
        ctx.lineTo(...line.to);
      }
      ctx.stroke();
    };
    stroke((l) => !l.avenue, COLORS.street, 1.5);
    stroke((l) => l.avenue, COLORS.avenueEdge, 6);
    stroke((l) => l.avenue, COLORS.street, 4);
  }

  drawScale() {
    const { ctx } = this;
    const perKm = this.pixelsPerKm();
    const km = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20].find((k) => k * perKm >= 60) ?? 20;
    const length = km * perKm;
    const x = 14;
    const y = this.height - 16;
    ctx.fillStyle = 'rgba(255,255,255,0.85)';
    ctx.fillRect(x - 6, y - 20, length + 12, 28);
    ctx.strokeStyle = COLORS.label;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x, y - 5);
    ctx.lineTo(x, y);
    ctx.lineTo(x + length, y);
    ctx.lineTo(x + length, y - 5);
    ctx.stroke();
    ctx.fillStyle = COLORS.label;
    ctx.font = '12px system-ui, sans-serif';
    ctx.textAlign = 'left';
    ctx.fillText(km < 1 ? `${km * 1000} m` : `${km} km`, x + 2, y - 8);
  }

  /** A filled circle with a white rim; `hollow` draws only the rim. */
  dot(p, color, { radius = 6, hollow = false, ring = false } = {}) {
    const { ctx } = this;
    const { x, y } = this.project(p);
    if (ring) {
      ctx.beginPath();
      ctx.arc(x, y, radius + 5, 0, 2 * Math.PI);
      ctx.strokeStyle = COLORS.label;
      ctx.lineWidth = 2;
      ctx.stroke();
    }
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    ctx.fillStyle = hollow ? '#ffffff' : color;
    ctx.fill();
    ctx.lineWidth = hollow ? 2.5 : 2;
    ctx.strokeStyle = hollow ? color : '#ffffff';
    ctx.stroke();
  }

  /** A restaurant: a rounded square. */
  restaurant(p, { size = 11, ring = false } = {}) {
    const { ctx } = this;
    const { x, y } = this.project(p);
    ctx.beginPath();
    ctx.roundRect(x - size / 2, y - size / 2, size, size, 2);
    ctx.fillStyle = COLORS.restaurant;
    ctx.fill();
    ctx.lineWidth = ring ? 3 : 1.5;
    ctx.strokeStyle = ring ? COLORS.label : '#ffffff';
    ctx.stroke();
  }

  /** A delivery address: a small house. */
  home(p, size = 16) {
    const { ctx } = this;
    const { x, y } = this.project(p);
    const s = size / 2;
    ctx.beginPath();
    ctx.moveTo(x, y - s);
    ctx.lineTo(x + s, y);
    ctx.lineTo(x + s * 0.7, y);
    ctx.lineTo(x + s * 0.7, y + s);
    ctx.lineTo(x - s * 0.7, y + s);
    ctx.lineTo(x - s * 0.7, y);
    ctx.lineTo(x - s, y);
    ctx.closePath();
    ctx.fillStyle = COLORS.home;
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = '#ffffff';
    ctx.stroke();
  }

  /** A line through `points`; `dashed` for a route still to go. */
  path(points, color, { width = 2, dashed = false, alpha = 1 } = {}) {
    if (points.length < 2) return;
    const { ctx } = this;
    ctx.save();
    ctx.globalAlpha = alpha;
    ctx.setLineDash(dashed ? [6, 5] : []);
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    points.forEach((p, i) => {
      const { x, y } = this.project(p);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.restore();
  }

  /**
   * A filled area: `rings` of {lat, lon} points, the first the outline and
   * the others its holes (even-odd fill leaves them open).
   */
  area(rings, color, { alpha = 0.12 } = {}) {
    const { ctx } = this;
    ctx.save();
    ctx.beginPath();
    for (const ring of rings) {
      ring.forEach((p, i) => {
        const { x, y } = this.project(p);
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.closePath();
    }
    ctx.globalAlpha = alpha;
    ctx.fillStyle = color;
    ctx.fill('evenodd');
    ctx.globalAlpha = 0.8;
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.restore();
  }

  /** Text with a white halo, beside a point. */
  label(p, text, { dx = 9, dy = 4, bold = false } = {}) {
    const { ctx } = this;
    const { x, y } = this.project(p);
    ctx.font = `${bold ? '600 ' : ''}12px system-ui, sans-serif`;
    ctx.textAlign = 'left';
    ctx.lineWidth = 3;
    ctx.strokeStyle = 'rgba(255,255,255,0.9)';
    ctx.strokeText(text, x + dx, y + dy);
    ctx.fillStyle = COLORS.label;
    ctx.fillText(text, x + dx, y + dy);
  }
}
