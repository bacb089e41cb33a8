// What the page's two canvases (the timeline, a task's chart) share:
// sizing to the element at the screen's pixel density, and the theme's
// colours, so both follow light and dark mode.

/** A 2D context on `canvas`, `height` CSS pixels tall and as wide as the
 * element, scaled to the screen's density and cleared; its width. */
export function fitCanvas(
  canvas: HTMLCanvasElement,
  height: number,
): { g: CanvasRenderingContext2D; width: number } | undefined {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = `${height}px`;
  const g = canvas.getContext("2d");
  if (!g) return undefined;
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  return { g, width };
}

/** A colour of the theme (a CSS custom property such as `--ok`). */
export function colour(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}
