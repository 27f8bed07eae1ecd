/** The error banner (role=alert) and a polite announcer, on the page's fixed elements. */

/** The page's fixed elements (the banner, the announcer, the token prompt, <main>): filled in by boot(). */
export const ui = {};

export function showError(message) {
  if (!ui.banner.hidden && ui.bannerText.textContent === message) return;
  ui.banner.hidden = false;
  ui.bannerText.textContent = message;
}
export function clearError() {
  ui.banner.hidden = true;
  ui.bannerText.textContent = "";
}
/** Clears the banner if it still says this (and not something said since). */
export function clearErrorIf(message) {
  if (!ui.banner.hidden && ui.bannerText.textContent === message) clearError();
}

export function announce(message) {
  ui.announcer.textContent = "";
  requestAnimationFrame(() => { ui.announcer.textContent = message; });
}
