package integration

import (
	"path/filepath"
	"testing"
)

// TestRestart stores an object through one server, stops it, and reads the
// object through a new server on the same store: nothing a client relies on
// lives in a server's memory.
func TestRestart(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"s3", func(t *testing.T) []string {
			env := requireS3(t)
			return env.serveArgs(env.newBucket(t))
		}},
		{"disk", func(t *testing.T) []string { return []string{"--data", t.TempDir()} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := tc.args(t)
			path := generated(t, chunkSize+1, 4)
			first := startServer(t, args...)
			mustFerry(t, "upload", "--server", first.url, path, "restart/object")
			first.Stop(t)

			second := startServer(t, args...)
			out := filepath.Join(t.TempDir(), "downloaded")
			mustFerry(t, "download", "--server", second.url, "restart/object", out)
			requireSameFile(t, path, out)
		})
	}
}
