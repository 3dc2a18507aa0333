package integration

import (
	"strings"
	"testing"
)

// TestObjectCommands drives stat, ls and rm through the CLI: listing by
// prefix, the attributes stat prints, and that a removed object is gone.
func TestObjectCommands(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv := backend.start(t)
			small := generated(t, 1000, 6)
			keys := []string{"docs/a.txt", "docs/b/c.txt", "other/d.txt"}
			for _, k := range keys {
				mustFerry(t, "upload", "--server", srv.url, small, k)
			}

			ls := mustFerry(t, "ls", "--server", srv.url, "docs/")
			for _, k := range keys {
				if listed := containsKey(ls.stdout, k); listed != (strings.HasPrefix(k, "docs/")) {
					t.Errorf("ferry ls docs/: %s listed = %v\n%s", k, listed, ls.stdout)
				}
			}
			all := mustFerry(t, "ls", "--server", srv.url)
			for _, k := range keys {
				if !containsKey(all.stdout, k) {
					t.Errorf("ferry ls: %s not listed\n%s", k, all.stdout)
				}
			}

			stat := mustFerry(t, "stat", "--server", srv.url, "docs/a.txt")
			if !containsWord(stat.stdout, "1000") {
				t.Errorf("ferry stat printed no size 1000:\n%s", stat.stdout)
			}

			mustFerry(t, "rm", "--server", srv.url, "docs/a.txt")
			if r := ferry(t, "stat", "--server", srv.url, "docs/a.txt"); r.err == nil {
				t.Errorf("ferry stat of a removed object succeeded:\n%s", r.stdout)
			}
			if r := ferry(t, "download", "--server", srv.url, "docs/a.txt", t.TempDir()+"/x"); r.err == nil {
				t.Errorf("ferry download of a removed object succeeded")
			}
			if ls := mustFerry(t, "ls", "--server", srv.url, "docs/"); containsKey(ls.stdout, "docs/a.txt") {
				t.Errorf("ferry ls still lists the removed object:\n%s", ls.stdout)
			}
			// Removing what is not there succeeds (S3 semantics).
			mustFerry(t, "rm", "--server", srv.url, "docs/a.txt")
		})
	}
}

// containsKey reports whether a listing shows key as a whole word, not as
// part of a longer key.
func containsKey(listing, key string) bool {
	for i := 0; ; {
		j := strings.Index(listing[i:], key)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(key)
		if (start == 0 || isSpace(listing[start-1])) && (end == len(listing) || isSpace(listing[end])) {
			return true
		}
		i = start + 1
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
