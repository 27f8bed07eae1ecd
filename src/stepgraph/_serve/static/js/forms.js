/** Forms generated from JSON schemas: labelled fields with inline validation. */

import { reportError } from "./api.js";
import { el, nextId } from "./dom.js";
import { asText, clip, toJson } from "./format.js";
import { EXACT_JSON, OutOfRange, UNSAFE_WHOLE, floatText, readTypedJson, unsafeWholeNumber } from "./json-numbers.js";

class Invalid extends Error {}

/** Follows "$ref": "#/$defs/X" (or #/definitions/X); siblings of $ref win. */
export function resolveRef(schema, defs) {
  let current = schema && typeof schema === "object" ? schema : {};
  for (let guard = 0; typeof current.$ref === "string" && guard < 32; guard++) {
    const match = /^#\/(?:\$defs|definitions)\/(.+)$/.exec(current.$ref);
    const name = match ? match[1].replace(/~1/g, "/").replace(/~0/g, "~") : null;
    const target = name !== null && Object.prototype.hasOwnProperty.call(defs, name) ? defs[name] : null;
    const { $ref, ...siblings } = current;
    if (!target) return siblings; // unknown reference: treat as "any"
    current = { ...target, ...siblings };
  }
  return current;
}

/** anyOf/oneOf [X, null] or type [X, "null"] → X, marked nullable. */
function splitNullable(schema) {
  const alternatives = schema.anyOf || schema.oneOf;
  if (Array.isArray(alternatives)) {
    const rest = alternatives.filter((alt) => !(alt && alt.type === "null"));
    if (rest.length === 1 && rest.length < alternatives.length) {
      const { anyOf, oneOf, ...outer } = schema;
      return { inner: { ...rest[0], ...outer }, nullable: true };
    }
  }
  if (Array.isArray(schema.type)) {
    const types = schema.type.filter((t) => t !== "null");
    if (types.length === 1) return { inner: { ...schema, type: types[0] }, nullable: types.length < schema.type.length };
  }
  return { inner: schema, nullable: false };
}

/** A title made from a field's name, as pydantic makes one ("fall_back" → "Fall Back"). */
const titleFromName = (name) => name.replace(/\p{L}+/gu, (w) => w[0].toUpperCase() + w.slice(1).toLowerCase()).replace(/_/g, " ").trim();

function fieldFor(rawSchema, opts) {
  const { inner, nullable } = splitNullable(resolveRef(rawSchema, opts.defs));
  const schema = resolveRef(inner, opts.defs);
  // A field neither required nor given a default in its schema has its
  // default made by a default_factory (or, in a TypedDict, may be absent).
  // What a factory gives cannot be shown: pydantic does not call factories
  // for a schema, nor should the server (uuid4, datetime.now: a new value
  // each run). Such a field starts empty and, left empty, is left out, so the
  // factory runs where the input is validated — never {} or [] in its stead.
  const unknownDefault = !opts.required && schema.default === undefined;
  // A property is labelled by its own title, else its name: one of a model
  // type has no title of its own in the schema, and its model's title
  // labelled two such fields alike (source, target: "Place", "Place").
  const ownTitle = rawSchema && typeof rawSchema.title === "string" ? rawSchema.title : null;
  const label = opts.property ? ownTitle ?? titleFromName(opts.label) : schema.title || opts.label;
  const o = { ...opts, label, nullable, optional: nullable || !opts.required, unknownDefault };
  if (Array.isArray(schema.enum) && schema.enum.length) return enumField(schema, o);
  if (schema.type === "string") return textField(schema, o);
  if (schema.type === "integer" || schema.type === "number") return numberField(schema, o);
  if (schema.type === "boolean") return boolField(schema, o);
  if (schema.type === "object" && schema.properties && typeof schema.properties === "object") return objectField(schema, o);
  return jsonField(schema, o);
}

/** Label, hint and inline error around one control. */
function labelled(control, schema, o, typeName) {
  control.id = nextId("f");
  const hint = schema.description ? el("small", { class: "hint", id: `${control.id}-hint`, text: schema.description }) : null;
  const error = el("p", { class: "field-error", id: `${control.id}-err`, hidden: true });
  control.setAttribute("aria-describedby", [hint && hint.id, error.id].filter(Boolean).join(" "));
  const suffix = `${typeName}${o.optional && control.type !== "checkbox" ? ", optional" : ""}`; // (a checkbox is always sent)
  const label = el("label", { for: control.id }, o.label, el("span", { class: "type-hint", text: ` (${suffix})` }));
  const isCheck = control.type === "checkbox";
  const wrap = el("div", { class: isCheck ? "field field-check" : "field" }, isCheck ? [control, label] : [label, control], hint, error);
  const setError = (message) => {
    error.textContent = message || "";
    error.hidden = !message;
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  };
  return { wrap, setError };
}
function fail(setError, message) {
  setError(message);
  throw new Invalid(message);
}
/** What an empty optional control sends: null, or nothing (its default applies). */
const blank = (o) => (o.nullable && !o.unknownDefault ? null : undefined);
/** What an empty control means: null, "leave out", or an error. */
function emptyValue(o, setError, message) {
  if (o.optional) return blank(o);
  return fail(setError, message);
}

function textField(schema, o) {
  const initial = typeof schema.default === "string" ? schema.default : "";
  const long = schema.format === "textarea" || (schema.maxLength || 0) > 200;
  const input = long ? el("textarea", { rows: 4, text: initial }) : el("input", { type: "text", value: initial, autocomplete: "off" });
  const { wrap, setError } = labelled(input, schema, o, "text");
  const read = () => {
    setError("");
    const value = input.value;
    if (value === "" && o.optional) return blank(o);
    if (typeof schema.minLength === "number" && value.length < schema.minLength) fail(setError, `Enter at least ${schema.minLength} characters.`);
    return value;
  };
  return { node: wrap, read };
}

function numberField(schema, o) {
  const integer = schema.type === "integer";
  // A "number" is a float (pydantic says "integer" for an int): it shows as
  // one (1000.0, not 1000) and is sent as one, where JSON.rawJSON can.
  const shown = (n) => (integer ? n : floatText(n));
  const input = el("input", {
    type: "number", step: integer ? "1" : "any", inputmode: integer ? "numeric" : "decimal",
    // (a default past 2**53 - 1 is read as its JSON text, as every such whole number)
    value: typeof schema.default === "number" ? shown(schema.default) : EXACT_JSON && JSON.isRawJSON(schema.default) ? schema.default.rawJSON : undefined,
  });
  if (!integer) {
    input.addEventListener("change", () => {
      const raw = input.value.trim();
      if (/^-?\d+$/.test(raw)) input.value = `${raw}.0`; // (typed 1000: still a float)
    });
  }
  const { wrap, setError } = labelled(input, schema, o, integer ? "whole number" : "number");
  const read = () => {
    setError("");
    const raw = input.value.trim();
    if (raw === "") return emptyValue(o, setError, "Enter a number.");
    const n = Number(raw);
    if (!Number.isFinite(n)) fail(setError, "Enter a number.");
    if (integer && !Number.isInteger(n)) fail(setError, "Enter a whole number.");
    if (typeof schema.minimum === "number" && n < schema.minimum) fail(setError, `Enter ${schema.minimum} or more.`);
    if (typeof schema.maximum === "number" && n > schema.maximum) fail(setError, `Enter ${schema.maximum} or less.`);
    if (integer && !Number.isSafeInteger(n)) {
      if (EXACT_JSON && /^-?\d+$/.test(raw)) return JSON.rawJSON(BigInt(raw).toString());
      fail(setError, EXACT_JSON ? "Write this whole number with its digits (not as 1e21), so it is sent exactly." : `A whole number ${UNSAFE_WHOLE}.`);
    }
    return !integer && EXACT_JSON ? JSON.rawJSON(floatText(n)) : n;
  };
  return { node: wrap, read };
}

function boolField(schema, o) {
  if (o.optional && typeof schema.default !== "boolean") {
    // Its default is no yes or no (null; or what a default_factory makes): a
    // checkbox left alone sent "no" in its stead. A choice, left as it is.
    const select = el("select");
    select.append(new Option(o.unknownDefault ? "— its default —" : "— none —", ""), new Option("yes", "yes"), new Option("no", "no"));
    const { wrap } = labelled(select, schema, o, "yes/no");
    return { node: wrap, read: () => (select.value === "" ? blank(o) : select.value === "yes") };
  }
  const input = el("input", { type: "checkbox", checked: schema.default === true });
  const { wrap } = labelled(input, schema, o, "yes/no");
  return { node: wrap, read: () => input.checked };
}

function enumField(schema, o) {
  const select = el("select");
  if (o.optional) select.append(new Option("— none —", ""));
  schema.enum.forEach((value, i) => {
    const option = new Option(asText(value), String(i));
    if (toJson(value) === toJson(schema.default)) option.selected = true;
    select.append(option);
  });
  const { wrap, setError } = labelled(select, schema, o, "choice");
  const read = () => {
    setError("");
    return select.value === "" ? emptyValue(o, setError, "Choose a value.") : schema.enum[Number(select.value)];
  };
  return { node: wrap, read };
}

function objectField(schema, o) {
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  // The object's own default fills its fields (a model's default instance may differ from its class's defaults).
  const given = schema.default && typeof schema.default === "object" && !Array.isArray(schema.default) ? schema.default : null;
  const legend = el("legend", {});
  const fieldset = el("fieldset", { class: "field-group" }, legend);
  let toggle = null;
  if (o.optional) {
    // Inside the first legend, the checkbox stays usable when the fieldset is disabled.
    // (ticked where there is a default to show: unticked, its default applies)
    toggle = el("input", { type: "checkbox", id: nextId("f"), checked: given !== null });
    legend.append(toggle, el("label", { for: toggle.id, text: ` ${o.label} (optional: tick to fill in)` }));
    toggle.addEventListener("change", () => { fieldset.disabled = !toggle.checked; });
    fieldset.disabled = !toggle.checked;
  } else {
    legend.textContent = o.label;
  }
  if (schema.description) fieldset.append(el("p", { class: "hint", text: schema.description }));
  const children = Object.entries(schema.properties).map(([name, sub]) => {
    const own = given && Object.prototype.hasOwnProperty.call(given, name) ? { ...sub, default: given[name] } : sub;
    const field = fieldFor(own, { defs: o.defs, label: name, property: true, required: required.has(name) });
    fieldset.append(field.node);
    return [name, field];
  });
  const read = () => {
    if (toggle && !toggle.checked) return blank(o);
    const value = {};
    let invalid = false;
    for (const [name, field] of children) {
      try {
        const v = field.read();
        if (v !== undefined) value[name] = v;
      } catch (error) {
        if (!(error instanceof Invalid)) throw error;
        invalid = true;
      }
    }
    if (invalid) throw new Invalid("invalid fields");
    return value;
  };
  return { node: fieldset, read };
}

function jsonField(schema, o) {
  let initial = "";
  if (schema.default !== undefined) initial = toJson(schema.default);
  else if (o.unknownDefault) initial = ""; // (not {} or [] for what its factory gives)
  else if (schema.type === "array") initial = "[]";
  else if (schema.type === "object") initial = "{}";
  const example = 'JSON, e.g. "text", 42, [1, 2] or {"key": "value"}';
  const area = el("textarea", {
    class: "json", rows: 4, spellcheck: "false", text: initial,
    placeholder: o.unknownDefault ? `Left empty: its default. Or ${example}` : example,
  });
  // A union that takes a string (an agent's "str | list[ChatMessage] | ...")
  // takes plain text as that string; JSON is read as JSON.
  const alternatives = schema.anyOf || schema.oneOf || [];
  const takesText = Array.isArray(alternatives) && alternatives.some((alt) => alt && alt.type === "string");
  const { wrap, setError } = labelled(area, schema, o, takesText ? "text or JSON" : "JSON");
  const exact = (raw, value) => {
    const big = unsafeWholeNumber(raw);
    return big ? fail(setError, `${clip(big, 40)}: a whole number ${UNSAFE_WHOLE}.`) : value;
  };
  const read = () => {
    setError("");
    const raw = area.value.trim();
    if (raw === "") return emptyValue(o, setError, "Enter a JSON value.");
    if (takesText) {
      // Text is the string itself; only an object, an array or a quoted
      // string is read as JSON (so 42, true and null are text too).
      if (!/^[[{"]/.test(raw)) return area.value;
      let value;
      try { value = readTypedJson(raw); } catch (error) {
        return error instanceof OutOfRange ? fail(setError, error.message) : area.value;
      }
      return exact(raw, value);
    }
    let value;
    try { value = readTypedJson(raw); } catch (error) {
      return fail(setError, error instanceof OutOfRange ? error.message : `This is not valid JSON: ${error.message}`);
    }
    return exact(raw, value);
  };
  return { node: wrap, read };
}

/** A whole form for one schema; onSubmit(value) may throw (shown in the banner). */
export function schemaForm({ schema, label, testid, submitText, submitTestid, formLabel, onSubmit }) {
  const root = schema && typeof schema === "object" ? schema : {};
  const defs = { ...(root.definitions || {}), ...(root.$defs || {}) };
  const field = fieldFor(root, { defs, label, required: true });
  const submit = el("button", { type: "submit", class: "primary", "data-testid": submitTestid, text: submitText });
  const form = el("form", { class: "schema-form", "data-testid": testid, novalidate: true, "aria-label": formLabel },
    field.node, el("div", { class: "form-actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let value;
    try {
      value = field.read();
    } catch (error) {
      if (!(error instanceof Invalid)) throw error;
      const bad = form.querySelector('[aria-invalid="true"]');
      if (bad) bad.focus();
      return;
    }
    submit.disabled = true;
    try {
      await onSubmit(value === undefined ? null : value);
    } catch (error) {
      reportError(error);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
