package s3store

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/ferryhq/ferry/store"
)

// verifyingReader is the body of an UploadPart request. It passes on the
// bytes of r while counting them and computing their CRC32C, and it holds
// back the last of them until it has checked that r ends exactly at size
// bytes and that the CRC32C is the one declared. When either check fails,
// the Read that would have delivered the final bytes returns an error
// instead, so the HTTP request body stays short of its Content-Length, the
// transport aborts the request, and S3 never receives a complete part: an
// earlier part with the same number stays as it was. This does not depend
// on the server checking x-amz-checksum-crc32c (which it is also sent).
//
// It deliberately implements neither io.Seeker nor io.WriterTo: minio-go
// retries only seekable bodies, and a part must not be sent twice from a
// reader that has been consumed.
//
// Close stops all reading of r and waits for a Read in progress to return.
// net/http may go on reading a request body after RoundTrip has returned
// (when the server answers before it has the whole body); minio-go closes
// a body that is an io.Closer before its call returns, so once UploadPart
// returns, the caller's reader is no longer touched and its buffer may be
// reused.
type verifyingReader struct {
	mu     sync.Mutex // held by Read while it reads r, and by Close
	closed bool

	r    io.Reader
	size int64  // bytes declared
	want uint32 // CRC32C declared
	// lengthOnly skips the CRC32C check: the reader then only makes sure
	// that exactly size bytes are sent.
	lengthOnly bool
	n          int64  // bytes delivered so far
	crc        uint32 // CRC32C of the bytes read so far
	err        error  // sticky: the first failure, returned by every later Read
}

func newVerifyingReader(r io.Reader, size int64, crc32c uint32) *verifyingReader {
	return &verifyingReader{r: r, size: size, want: crc32c}
}

// errClosed is returned by a Read after Close.
var errClosed = errors.New("part data reader closed")

// Read implements io.Reader.
func (v *verifyingReader) Read(p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return 0, v.err
	}
	if v.closed {
		return 0, errClosed
	}
	left := v.size - v.n
	if left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	k, err := v.r.Read(p)
	v.crc = crc32.Update(v.crc, store.Castagnoli, p[:k])
	if int64(k) == left {
		// These are the final bytes: deliver them only once verified.
		if err := v.finish(err); err != nil {
			return 0, err
		}
		v.n += int64(k)
		return k, nil
	}
	v.n += int64(k)
	switch {
	case err == io.EOF:
		v.err = fmt.Errorf("%w: reader ended after %d of %d bytes: %w", store.ErrSizeMismatch, v.n, v.size, io.ErrUnexpectedEOF)
		return 0, v.err
	case err != nil:
		v.err = fmt.Errorf("reading part data: %w", err)
		return 0, v.err
	}
	return k, nil
}

// finish checks, once all size bytes have been read, that r has no more
// and that the CRC32C matches. readErr is what the Read of the last bytes
// returned besides them.
func (v *verifyingReader) finish(readErr error) error {
	switch {
	case readErr == nil:
		// r has not said it ended: it must yield nothing more.
		var probe [1]byte
		m, err := io.ReadAtLeast(v.r, probe[:], 1)
		switch {
		case m > 0:
			v.err = fmt.Errorf("%w: reader yields more than %d bytes", store.ErrSizeMismatch, v.size)
			return v.err
		case err != io.EOF:
			v.err = fmt.Errorf("reading part data: %w", err)
			return v.err
		}
	case readErr != io.EOF:
		v.err = fmt.Errorf("reading part data: %w", readErr)
		return v.err
	}
	if !v.lengthOnly && v.crc != v.want {
		v.err = fmt.Errorf("%w: part data has CRC32C %08x, declared %08x", store.ErrChecksumMismatch, v.crc, v.want)
		return v.err
	}
	return nil
}

// Close implements io.Closer. It does not close r.
func (v *verifyingReader) Close() error {
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
	return nil
}

// failure returns the error that made a Read fail, if any.
func (v *verifyingReader) failure() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// verifyEmpty checks a part declared as 0 bytes, which is sent without a
// body: r must yield nothing, and the CRC32C of no bytes is 0.
func (v *verifyingReader) verifyEmpty() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.finish(nil)
}
