/**
 * A time as Date.prototype.toISOString writes it, from its milliseconds, made cheaply: every record
 * carries one, and V8 formats each date anew (~0.4 µs). The text up to the second is kept for the
 * second being written, so a record's time is that text and its milliseconds. The same text as
 * toISOString for every time, the years before 0 and after 9999 included; an invalid time throws as it does.
 */

/** "000Z" … "999Z": the milliseconds and the zone of a time's text. */
const MILLIS = Array.from({ length: 1000 }, (_, i) => `${String(i).padStart(3, '0')}Z`);

/** The largest time a Date holds, in ms either side of 1970 (ECMAScript's TimeClip). */
const MAX_TIME = 8.64e15;

let second = NaN;
/** The text of `second` up to its fraction: "2026-12-03T06:42:37." */
let secondText = '';

export function isoTime(time: number): string {
  const ms = Math.trunc(time); // as a Date keeps it (a kernel's time in ms has a fraction)
  if (!(Math.abs(ms) <= MAX_TIME)) return new Date(time).toISOString(); // throws (RangeError): NaN, ±Infinity, beyond a Date's range
  const s = Math.floor(ms / 1000);
  if (s !== second) {
    const text = new Date(s * 1000).toISOString();
    second = s;
    secondText = text.slice(0, text.length - 4);
  }
  return secondText + MILLIS[ms - s * 1000];
}
