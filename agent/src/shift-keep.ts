/**
 * arr.shift() that keeps the array's storage when it empties. V8 gives an array emptied by shift()
 * new storage at its next push (a new backing store per item for a queue that empties after nearly
 * every item, as a kept-alive connection's requests waiting for their answer do); one emptied by
 * pop() keeps its own.
 */
export function shiftKeep<T>(arr: T[]): T | undefined {
  return arr.length === 1 ? arr.pop() : arr.shift();
}
