package s3store

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/ferryhq/ferry/store"
)

// TestVerifyingReader: a matching reader passes every byte and then EOF;
// any fault (wrong CRC32C, too short, too long, a read error) is an error
// returned before the last byte is delivered, so an HTTP body built on it
// never reaches its Content-Length.
func TestVerifyingReader(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	size := int64(len(data))
	crc := store.CRC32C(data)
	broken := errors.New("broken")
	tests := []struct {
		name    string
		r       io.Reader
		size    int64
		crc     uint32
		wantErr error // nil: must succeed; errAny: any error
	}{
		{"Match", bytes.NewReader(data), size, crc, nil},
		{"MatchOneByteReads", iotest.OneByteReader(bytes.NewReader(data)), size, crc, nil},
		{"MatchDataWithEOF", iotest.DataErrReader(bytes.NewReader(data)), size, crc, nil},
		{"MatchHalfReads", iotest.HalfReader(bytes.NewReader(data)), size, crc, nil},
		{"WrongCRC", bytes.NewReader(data), size, crc ^ 1, store.ErrChecksumMismatch},
		{"WrongCRCOneByteReads", iotest.OneByteReader(bytes.NewReader(data)), size, crc ^ 0x80000000, store.ErrChecksumMismatch},
		{"Short", bytes.NewReader(data[:size-1]), size, crc, store.ErrSizeMismatch},
		{"Empty", bytes.NewReader(nil), size, crc, store.ErrSizeMismatch},
		{"Long", io.MultiReader(bytes.NewReader(data), bytes.NewReader([]byte("x"))), size, crc, store.ErrSizeMismatch},
		{"LongDataWithEOF", iotest.DataErrReader(bytes.NewReader(append(data[:size:size], 'x'))), size, crc, store.ErrSizeMismatch},
		{"FailsMidway", io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(broken)), size, crc, broken},
		{"FailsAtTheLastByte", io.MultiReader(bytes.NewReader(data[:size-1]), iotest.ErrReader(broken)), size, crc, broken},
		{"FailsAfterTheLastByte", io.MultiReader(bytes.NewReader(data), iotest.ErrReader(broken)), size, crc, broken},
		{"Timeout", iotest.TimeoutReader(bytes.NewReader(data)), size, crc, iotest.ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := newVerifyingReader(tt.r, tt.size, tt.crc)
			var got bytes.Buffer
			// Read with a buffer smaller than the data, the way the HTTP
			// transport does.
			n, err := io.CopyBuffer(&got, v, make([]byte, 32<<10))
			if tt.wantErr == nil {
				if err != nil || !bytes.Equal(got.Bytes(), data) {
					t.Fatalf("copied %d bytes, err %v; want all %d bytes", n, err, size)
				}
				if _, err := v.Read(make([]byte, 1)); err != io.EOF {
					t.Errorf("Read after the end = %v, want EOF", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			if n >= tt.size {
				t.Errorf("delivered %d bytes of %d before the error; the last byte must be held back", n, tt.size)
			}
			if _, again := v.Read(make([]byte, 10)); !errors.Is(again, tt.wantErr) {
				t.Errorf("Read after the error = %v, want the same error", again)
			}
		})
	}
}

func TestVerifyingReaderEmpty(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		r       io.Reader
		crc     uint32
		wantErr error
	}{
		{"Empty", bytes.NewReader(nil), 0, nil},
		{"WrongCRC", bytes.NewReader(nil), 1, store.ErrChecksumMismatch},
		{"NotEmpty", bytes.NewReader([]byte("x")), 0, store.ErrSizeMismatch},
		{"Fails", iotest.ErrReader(errors.New("broken")), 0, errAnyForTest},
	}
	for _, tt := range tests {
		err := newVerifyingReader(tt.r, 0, tt.crc).verifyEmpty()
		switch {
		case tt.wantErr == nil && err != nil:
			t.Errorf("%s: verifyEmpty = %v, want nil", tt.name, err)
		case tt.wantErr == errAnyForTest && err == nil:
			t.Errorf("%s: verifyEmpty succeeded, want an error", tt.name)
		case tt.wantErr != nil && tt.wantErr != errAnyForTest && !errors.Is(err, tt.wantErr):
			t.Errorf("%s: verifyEmpty = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

var errAnyForTest = errors.New("any error")

func TestReadAll(t *testing.T) {
	t.Parallel()
	data := []byte("manifest")
	got, crc, err := readAll(bytes.NewReader(data), int64(len(data)))
	if err != nil || !bytes.Equal(got, data) || crc != store.CRC32C(data) {
		t.Errorf("readAll = %q, %08x, %v; want %q, %08x", got, crc, err, data, store.CRC32C(data))
	}
	if _, _, err := readAll(bytes.NewReader(data), int64(len(data))+1); !errors.Is(err, store.ErrSizeMismatch) {
		t.Errorf("readAll of a short reader = %v, want store.ErrSizeMismatch", err)
	}
	if _, _, err := readAll(bytes.NewReader(data), int64(len(data))-1); !errors.Is(err, store.ErrSizeMismatch) {
		t.Errorf("readAll of a long reader = %v, want store.ErrSizeMismatch", err)
	}
}

// blockingReader blocks every Read until release is closed, and counts
// the Reads that started.
type blockingReader struct {
	started chan struct{}
	release chan struct{}
	reads   atomic.Int32
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.reads.Add(1) == 1 {
		close(b.started)
	}
	<-b.release
	return copy(p, "x"), nil
}

// TestVerifyingReaderClose: Close waits for a Read in progress, and no
// Read after it touches the underlying reader, so the caller's reader is
// free once UploadPart returns even if net/http still reads the body.
func TestVerifyingReaderClose(t *testing.T) {
	t.Parallel()
	b := &blockingReader{started: make(chan struct{}), release: make(chan struct{})}
	v := newVerifyingReader(b, 10, 0)
	go func() { _, _ = v.Read(make([]byte, 4)) }()
	<-b.started
	closed := make(chan struct{})
	go func() {
		v.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a Read of the underlying reader was in progress")
	case <-time.After(50 * time.Millisecond):
	}
	close(b.release)
	<-closed
	if _, err := v.Read(make([]byte, 4)); !errors.Is(err, errClosed) {
		t.Errorf("Read after Close = %v, want errClosed", err)
	}
	if n := b.reads.Load(); n != 1 {
		t.Errorf("the underlying reader was read %d times, want 1 (none after Close)", n)
	}
}
