// Package suggest finds the likely intended word for a mistyped one, for
// "did you mean" hints in the command line and configuration errors.
package suggest

import "strings"

// Closest returns the candidate nearest to word by edit distance
// (case-insensitive), or "" when none is near enough to be a typo: at most
// a third of the word's length, and at most 3 edits.
func Closest(word string, candidates []string) string {
	best, bestD := "", 4
	limit := min(3, max(1, len(word)/3))
	for _, c := range candidates {
		d := distance(strings.ToLower(word), strings.ToLower(c))
		if d < bestD && d <= limit {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of neighbours
// (the commonest typo) each cost 1.
func distance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
