/**
 * "Did you mean …?" for misspelled flags, keys and environment variables.
 */

/** Levenshtein distance of a and b, compared case-insensitively (so "PublicIp" is 0 from "PublicIP"). */
export function editDistance(a: string, b: string): number {
  const s = a.toLowerCase();
  const t = b.toLowerCase();
  let prev = Array.from({ length: t.length + 1 }, (_, j) => j);
  for (let i = 1; i <= s.length; i++) {
    const cur = [i];
    for (let j = 1; j <= t.length; j++) {
      cur[j] = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + (s[i - 1] === t[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[t.length] as number;
}

/**
 * The candidate nearest to `word`, or undefined when none is close: within a third of the
 * longer name's length (at least 2 edits), or one contains the other.
 */
export function nearest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    const close = d <= Math.max(2, Math.floor(Math.max(word.length, c.length) / 3))
      || (word.length >= 3 && c.toLowerCase().includes(word.toLowerCase()))
      || (c.length >= 3 && word.toLowerCase().includes(c.toLowerCase()));
    if (close && d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

/** `: did you mean "X"?` (quoted: keys) or `: did you mean X?` (flags, variables), or the empty string. */
export function didYouMean(word: string, candidates: Iterable<string>, quote = true): string {
  const n = nearest(word, candidates);
  if (n === undefined) return '';
  return quote ? `: did you mean "${n}"?` : `: did you mean ${n}?`;
}
