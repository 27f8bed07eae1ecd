/**
 * JSON numbers, exactly: a whole number past 2**53 - 1 is kept as its JSON
 * text where the browser can (JSON.rawJSON), and refused where it cannot,
 * never rounded; a number a person typed is sent as written.
 */

import { clip } from "./format.js";

// A whole number past 2**53 - 1 (a run's output, a request's field) is kept
// as its JSON text where the browser can (JSON.rawJSON, and the source text
// a reviver is given): shown, and sent back, exactly — not rounded.
export const EXACT_JSON = typeof JSON.rawJSON === "function";
const keepWhole = (key, value, context) => (typeof value === "number" && !Number.isSafeInteger(value) && context
  && /^-?\d+$/.test(context.source) ? JSON.rawJSON(context.source) : value);
// (a reviver slows a long log's reading: only a text with such a number gets one)
const readJsonText = (text) => JSON.parse(text, EXACT_JSON && /[89]\d{15}|\d{17}/.test(text) ? keepWhole : undefined);
export function parseJson(text) { try { return readJsonText(text); } catch { return undefined; } }
/** A number typed in a JSON field that no number holds (1e400): refused, not sent as null. */
export class OutOfRange extends Error {}
/**
 * JSON a person typed (a form's JSON field, a tool call's arguments): its
 * numbers are sent as written, as `stepgraph run --input` reads them
 * (9007199254740993 not rounded, 1.0 a float), and one past any number's
 * range (1e400, which JSON.stringify sends as null) is refused.
 */
export function readTypedJson(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value !== "number") return value;
    const source = context && typeof context.source === "string" ? context.source : null;
    if (!Number.isFinite(value)) throw new OutOfRange(`${clip(source ?? String(value), 40)} is past the largest number JSON can carry here.`);
    return EXACT_JSON && source !== null && source !== JSON.stringify(value) ? JSON.rawJSON(source) : value;
  });
}

/**
 * A float's JSON text, saying it is one: 1000.0 as "1000.0", where
 * JSON.stringify writes "1000" — a whole number to Python (a float field of
 * a TypedDict refuses it).
 */
export function floatText(n) {
  const text = String(n);
  return /^-?\d+$/.test(text) ? `${text}.0` : text;
}

// Where a whole number past 2**53 - 1 cannot be kept exactly (an older
// browser; or written as 1e21), it is refused, never sent rounded.
export const UNSAFE_WHOLE = `can be sent exactly from this page only from -${Number.MAX_SAFE_INTEGER} to ${Number.MAX_SAFE_INTEGER} (send a larger whole number with the API or stepgraph run)`;
/** The first whole number in a JSON text that a page's numbers would round, else null. */
export function unsafeWholeNumber(jsonText) {
  if (EXACT_JSON) return null;
  const bare = jsonText.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  for (const [literal, fraction, exponent] of bare.matchAll(/-?\d+(\.\d+)?([eE][+-]?\d+)?/g)) {
    if (!fraction && !exponent && !Number.isSafeInteger(Number(literal))) return literal;
  }
  return null;
}
