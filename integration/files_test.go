package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
)

const (
	// MiB is one mebibyte in bytes.
	MiB = 1 << 20
	// chunkSize is the chunk size in bytes of the round-trip tests' servers
	// (ferry serve --chunk-size, which is also its default), used when the
	// client leaves it to the server as the CLI does.
	chunkSize = 8 * MiB
	// chunkSizeFlag is chunkSize as ferry serve's --chunk-size takes it.
	chunkSizeFlag = "8MiB"
	// largeSize is the size in bytes of the large generated file: many
	// chunks, and far more than any buffer a client or server should hold.
	largeSize = 200 * MiB
	// maxDataMessage is the most bytes one DownloadResponse may carry
	// (download.proto), under grpc-go's default 4 MiB receive limit.
	maxDataMessage = 1 * MiB
)

// generatedFiles caches the generated inputs: each is written once per run
// into sharedDir and read by every test that uses it.
var generatedFiles struct {
	sync.Mutex
	byName map[string]*generatedFile
}

type generatedFile struct {
	once sync.Once
	path string
	err  error
}

// generated returns the path of a file of size bytes drawn from a ChaCha8
// PRNG seeded with seed: the same bytes on every run, incompressible, and
// with no structure a bug could hide behind.
func generated(t testing.TB, size int64, seed uint64) string {
	t.Helper()
	name := fmt.Sprintf("gen-%d-%d", size, seed)
	generatedFiles.Lock()
	if generatedFiles.byName == nil {
		generatedFiles.byName = map[string]*generatedFile{}
	}
	f := generatedFiles.byName[name]
	if f == nil {
		f = &generatedFile{path: filepath.Join(sharedDir, name)}
		generatedFiles.byName[name] = f
	}
	generatedFiles.Unlock()
	f.once.Do(func() { f.err = writeRandom(f.path, size, seed) })
	if f.err != nil {
		t.Fatalf("generate %s: %v", name, f.err)
	}
	return f.path
}

func writeRandom(path string, size int64, seed uint64) error {
	var key [32]byte
	for i := range 4 {
		for j := range 8 {
			key[i*8+j] = byte(seed >> (8 * j))
		}
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(out, rand.NewChaCha8(key), size); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// toolchainFiles returns the Go toolchain's own tool binaries (compile,
// link, vet...): real files of several sizes that nobody here wrote.
func toolchainFiles(t testing.TB) []string {
	t.Helper()
	dir := goEnv(t, "GOTOOLDIR")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read GOTOOLDIR: %v", err)
	}
	var paths []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	if len(paths) == 0 {
		t.Fatalf("no files in GOTOOLDIR %s", dir)
	}
	sort.Strings(paths)
	return paths
}

// fileSize returns the size of the file at path in bytes.
func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// requireSameFile fails the test unless the files hold the same bytes,
// naming the first offset where they differ. It streams, so large files
// cost no memory.
func requireSameFile(t testing.TB, want, got string) {
	t.Helper()
	wantSize, gotSize := fileSize(t, want), fileSize(t, got)
	if wantSize != gotSize {
		t.Fatalf("%s: size %d bytes, want %d (as %s)", got, gotSize, wantSize, want)
	}
	wf, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	gf, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	wr, gr := bufio.NewReaderSize(wf, MiB), bufio.NewReaderSize(gf, MiB)
	wbuf, gbuf := make([]byte, MiB), make([]byte, MiB)
	var off int64
	for {
		wn, werr := io.ReadFull(wr, wbuf)
		gn, gerr := io.ReadFull(gr, gbuf)
		if wn != gn {
			t.Fatalf("%s: short read at offset %d", got, off)
		}
		if i := firstDiff(wbuf[:wn], gbuf[:gn]); i >= 0 {
			t.Fatalf("%s differs from %s at offset %d", got, want, off+int64(i))
		}
		off += int64(wn)
		if werr != nil || gerr != nil {
			if (werr == io.EOF || werr == io.ErrUnexpectedEOF) && (gerr == io.EOF || gerr == io.ErrUnexpectedEOF) {
				return
			}
			t.Fatalf("compare %s with %s: %v, %v", got, want, werr, gerr)
		}
	}
}

// firstDiff returns the index of the first byte where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
