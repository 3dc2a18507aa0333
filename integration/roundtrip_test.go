package integration

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// protocols are the wire protocols the CLI speaks (--protocol).
var protocols = []string{"connect", "grpc", "grpcweb"}

// transferCase is one file to send through ferry and back.
type transferCase struct {
	name string
	path string
}

// transferCases returns the files every protocol must carry byte for byte:
// the edges of the chunking (empty, one byte, exactly one chunk, one chunk
// and a byte), a large file of many chunks (not in -short mode), and real
// files of assorted sizes that nobody here wrote (the Go toolchain's
// binaries).
func transferCases(t *testing.T) []transferCase {
	t.Helper()
	cases := []transferCase{
		{"empty", generated(t, 0, 1)},
		{"one-byte", generated(t, 1, 2)},
		{"one-chunk", generated(t, chunkSize, 3)},
		{"one-chunk-plus-one", generated(t, chunkSize+1, 4)},
	}
	if !testing.Short() {
		cases = append(cases, transferCase{largeName, generated(t, largeSize, 5)})
	}
	for _, p := range toolchainFiles(t) {
		cases = append(cases, transferCase{"gotool-" + filepath.Base(p), p})
	}
	return cases
}

// largeName names the large generated file among the transfer cases.
const largeName = "200MiB"

// TestRoundTripS3 uploads every transfer case with every protocol to a
// ferry server in front of S3, then downloads it and compares the bytes.
func TestRoundTripS3(t *testing.T) {
	t.Parallel()
	srv, _, _ := startS3Server(t, "--chunk-size", chunkSizeFlag)
	testRoundTrips(t, srv, true, func(string, transferCase) bool { return true })
}

// TestRoundTripDisk does the same against the embedded disk store, the
// default when no S3 endpoint is configured. The store under the protocols
// is not S3's, so to save time the large file goes through one protocol
// only and the toolchain's files are two: the largest and one just over a
// chunk.
func TestRoundTripDisk(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--data", t.TempDir(), "--chunk-size", chunkSizeFlag)
	testRoundTrips(t, srv, false, func(protocol string, tc transferCase) bool {
		switch {
		case tc.name == largeName:
			return protocol == "grpc"
		case strings.HasPrefix(tc.name, "gotool-"):
			return tc.name == "gotool-compile" || tc.name == "gotool-vet"
		}
		return true
	})
}

// testRoundTrips runs a round trip of each transfer case that include
// accepts, with each protocol, in parallel. With s3 set it also checks that
// each object was stored as one S3 part per chunk.
func testRoundTrips(t *testing.T, srv *server, s3 bool, include func(protocol string, tc transferCase) bool) {
	cases := transferCases(t)
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			for _, tc := range cases {
				if !include(protocol, tc) {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					roundTrip(t, srv, s3, protocol, tc.path, protocol+"/"+tc.name)
				})
			}
		})
	}
}

// roundTrip uploads the file at path under key with the CLI, checks what
// stat reports, downloads it into a new file and compares the two.
//
// With s3 set, it checks the number of parts too: S3 gives an object made
// by a multipart upload the ETag "<hex>-<number of parts>", and ferry
// stores chunk i as part i+1, so a file of exactly one chunk must be one
// part and a file one byte longer two. A file of up to 5 MiB is stored in
// one request instead (upload/oneshot.go) and has a plain ETag.
func roundTrip(t *testing.T, srv *server, s3 bool, protocol, path, key string) {
	t.Helper()
	size := fileSize(t, path)
	mustFerry(t, "upload", "--server", srv.url, "--protocol", protocol, path, key)

	stat := mustFerry(t, "stat", "--server", srv.url, "--protocol", protocol, key)
	if !strings.Contains(stat.stdout, key) || !containsWord(stat.stdout, strconv.FormatInt(size, 10)) {
		t.Errorf("ferry stat %s printed no key %q and size %d:\n%s", key, key, size, stat.stdout)
	}
	switch etag := statField(stat.stdout, "etag"); {
	case !s3:
	case size <= 5<<20:
		// The client sends an object of up to 5 MiB in one stream, which
		// the server stores with one PutObject: a plain MD5 ETag, no parts.
		if len(etag) != 32 || strings.Contains(etag, "-") {
			t.Errorf("ETag %q of a %d-byte object: want the plain ETag of an object stored in one request", etag, size)
		}
	default:
		parts := max(1, (size+chunkSize-1)/chunkSize)
		if !strings.HasSuffix(etag, "-"+strconv.FormatInt(parts, 10)) {
			t.Errorf("ETag %q of a %d-byte object: want the ETag of %d S3 parts of %d bytes (suffix -%d)",
				etag, size, parts, chunkSize, parts)
		}
	}

	out := filepath.Join(t.TempDir(), "downloaded")
	mustFerry(t, "download", "--server", srv.url, "--protocol", protocol, key, out)
	requireSameFile(t, path, out)
}

// statField returns the value of a "name: value" line of ferry stat's
// output, or "" when there is none.
func statField(out, name string) string {
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// containsWord reports whether s contains word delimited by anything but
// letters and digits, so a size of 1 is not found inside 1024.
func containsWord(s, word string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], word)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(word)
		if (start == 0 || !isAlnum(s[start-1])) && (end == len(s) || !isAlnum(s[end])) {
			return true
		}
		i = start + 1
	}
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
