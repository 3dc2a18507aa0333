package s3store

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/store"
)

func TestListRanges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix, after string
		want          []listRange
	}{
		{"p/", "", []listRange{{prefix: "p/"}}},
		{"p/", "p/x", []listRange{{prefix: "p/", startAfter: "p/x"}}},
		{"p/", "q", []listRange{{prefix: "p/", startAfter: "q"}}},
		{"p/", "p/a/x", []listRange{
			{prefix: "p/a/", startAfter: "p/a/x"},
			{prefix: "p/a0", exact: true},
			{prefix: "p/", startAfter: "p/a0"},
		}},
		{"p/", "p/a/b/c", []listRange{
			{prefix: "p/a/b/", startAfter: "p/a/b/c"},
			{prefix: "p/a/b0", exact: true},
			{prefix: "p/a/", startAfter: "p/a/b0"},
			{prefix: "p/a0", exact: true},
			{prefix: "p/", startAfter: "p/a0"},
		}},
		{"p/a", "p/a/x", []listRange{
			{prefix: "p/a/", startAfter: "p/a/x"},
			{prefix: "p/a0", exact: true},
			{prefix: "p/a", startAfter: "p/a0"},
		}},
		{"", "a/b", []listRange{
			{prefix: "a/", startAfter: "a/b"},
			{prefix: "a0", exact: true},
			{prefix: "", startAfter: "a0"},
		}},
	} {
		if got := listRanges(tc.prefix, tc.after); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("listRanges(%q, %q) = %+v, want %+v", tc.prefix, tc.after, got, tc.want)
		}
	}
	// A start-after deeper than any valid key is split at its deepest
	// levels only.
	deep := strings.Repeat("d/", 100) + "x"
	got := listRanges("", deep)
	if len(got) != 2*store.MaxKeySegments+1 || got[0].prefix != strings.Repeat("d/", 100) || got[len(got)-1].prefix != "" {
		t.Errorf("listRanges of a key of 101 segments = %d ranges (first %+v, last %+v), want %d from the deepest level up, the last under the prefix",
			len(got), got[0], got[len(got)-1], 2*store.MaxKeySegments+1)
	}
}

// TestListAfterSiblings: MinIO, resuming a listing after a key inside
// "d/a/", counts the objects of a sibling such as "d/a-b/" (which sorts
// before "d/a/" by bytes) against the request's limit and leaves out the
// rest of "d/a/": after "d/a/x" with max-keys 2 it answered only "d/z".
// The store lists every key, in order, whatever the page size, and
// across the exact key that follows a directory ("d/a0").
func TestListAfterSiblings(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	keys := []string{"d/a/x", "d/a/y", "d/a0", "d/a00", "d/z", "e"}
	for i := range 20 {
		keys = append(keys, fmt.Sprintf("d/a-b/%02d", i), fmt.Sprintf("d/a/x-%02d", i), fmt.Sprintf("d/a b/%02d", i))
	}
	for _, k := range keys {
		if _, err := s.PutObject(t.Context(), k, bytes.NewReader([]byte(k)), int64(len(k)), store.PutOptions{}); err != nil {
			t.Fatalf("PutObject(%q) = %v", k, err)
		}
	}
	slices.Sort(keys)
	for _, prefix := range []string{"", "d/", "d/a"} {
		var want []string
		for _, k := range keys {
			if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
				want = append(want, k)
			}
		}
		for _, pageSize := range []int{1, 2, 3, 5, 1000} {
			var got []string
			after := ""
			for pages := 0; ; pages++ {
				if pages > len(keys)+1 {
					t.Fatalf("prefix %q, pages of %d: the listing does not end", prefix, pageSize)
				}
				res, err := s.ListObjects(t.Context(), prefix, after, pageSize)
				if err != nil {
					t.Fatalf("ListObjects(%q, %q, %d) = %v", prefix, after, pageSize, err)
				}
				if len(res.Objects) > pageSize || res.IsTruncated && len(res.Objects) == 0 {
					t.Fatalf("ListObjects(%q, %q, %d) returned %d objects, truncated %v", prefix, after, pageSize, len(res.Objects), res.IsTruncated)
				}
				for _, o := range res.Objects {
					got = append(got, o.Key)
					after = o.Key
				}
				if !res.IsTruncated {
					break
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("prefix %q in pages of %d lists %q, want %q", prefix, pageSize, got, want)
			}
		}
	}
}

// TestListDotPrefix: MinIO refuses a listing prefix whose last segment is
// "." or ".." (XMinioInvalidResourceName), though keys may begin so
// ("r/..x"); the store lists those keys, and only those, in pages of any
// size.
func TestListDotPrefix(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	keys := []string{"r/.-", "r/..", "r/..a", "r/..b/c", "r/...", "r/.x", "r/0", ".a", "..b"}
	for _, k := range keys {
		if k == "r/.." {
			continue // not a key ferry writes; it sorts among them
		}
		if _, err := s.PutObject(t.Context(), k, bytes.NewReader([]byte(k)), int64(len(k)), store.PutOptions{}); err != nil {
			t.Fatalf("PutObject(%q) = %v", k, err)
		}
	}
	for prefix, want := range map[string][]string{
		"r/..": {"r/...", "r/..a", "r/..b/c"},
		"r/.":  {"r/.-", "r/...", "r/..a", "r/..b/c", "r/.x"},
		"..":   {"..b"},
		".":    {"..b", ".a"},
	} {
		for _, pageSize := range []int{1, 2, 1000} {
			var got []string
			after := ""
			for pages := 0; pages <= len(keys); pages++ {
				res, err := s.ListObjects(t.Context(), prefix, after, pageSize)
				if err != nil {
					t.Fatalf("ListObjects(%q, %q, %d) = %v", prefix, after, pageSize, err)
				}
				for _, o := range res.Objects {
					got, after = append(got, o.Key), o.Key
				}
				if !res.IsTruncated {
					break
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("prefix %q in pages of %d lists %q, want %q", prefix, pageSize, got, want)
			}
		}
	}
}
