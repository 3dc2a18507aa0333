package main

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// withIdleTimeout cuts off a request whose body read, or a response whose
// write, has been blocked for longer than idle: a client that opens an
// Upload stream and sends nothing, stops mid-stream, or stops reading a
// download. Time the handler spends between reads and writes (storing a
// chunk, say) never counts, so a slow but moving transfer of any length is
// not cut. It works on HTTP/1.1 and HTTP/2 alike, through
// [http.ResponseController]'s read and write deadlines: once a read or write
// has been blocked for idle, its deadline is set to now, which fails it
// (and, on HTTP/2, only its stream). idle <= 0 returns h unchanged.
func withIdleTimeout(h http.Handler, idle time.Duration) http.Handler {
	if idle <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wd := &idleWatchdog{rc: http.NewResponseController(w), idle: idle}
		wd.mu.Lock()
		wd.timer = time.AfterFunc(wd.period(), wd.check)
		wd.mu.Unlock()
		defer wd.stop()
		r.Body = &idleBody{ReadCloser: r.Body, wd: wd}
		h.ServeHTTP(&idleResponseWriter{ResponseWriter: w, wd: wd}, r)
	})
}

// idleWatchdog checks a few times per idle period whether the request's
// current read or write has been blocked for idle.
type idleWatchdog struct {
	rc   *http.ResponseController
	idle time.Duration

	mu         sync.Mutex
	timer      *time.Timer
	stopped    bool
	readSince  time.Time // start of the blocked read; zero when not reading
	writeSince time.Time // start of the blocked write; zero when not writing
}

func (wd *idleWatchdog) period() time.Duration { return max(wd.idle/4, time.Millisecond) }

func (wd *idleWatchdog) check() {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if wd.stopped {
		return
	}
	now := time.Now()
	if !wd.readSince.IsZero() && now.Sub(wd.readSince) >= wd.idle {
		_ = wd.rc.SetReadDeadline(now)
		wd.readSince = time.Time{}
	}
	if !wd.writeSince.IsZero() && now.Sub(wd.writeSince) >= wd.idle {
		_ = wd.rc.SetWriteDeadline(now)
		wd.writeSince = time.Time{}
	}
	wd.timer.Reset(wd.period())
}

func (wd *idleWatchdog) stop() {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	wd.stopped = true
	wd.timer.Stop()
}

func (wd *idleWatchdog) mark(since *time.Time, blocked bool) {
	wd.mu.Lock()
	if blocked {
		*since = time.Now()
	} else {
		*since = time.Time{}
	}
	wd.mu.Unlock()
}

// idleBody is a request body whose reads the watchdog times.
type idleBody struct {
	io.ReadCloser
	wd *idleWatchdog
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.wd.mark(&b.wd.readSince, true)
	defer b.wd.mark(&b.wd.readSince, false)
	return b.ReadCloser.Read(p)
}

// idleResponseWriter is a response writer whose writes the watchdog times.
// It keeps http.Flusher and, through Unwrap, the underlying writer's other
// capabilities for [http.ResponseController].
type idleResponseWriter struct {
	http.ResponseWriter
	wd *idleWatchdog
}

func (w *idleResponseWriter) Write(p []byte) (int, error) {
	w.wd.mark(&w.wd.writeSince, true)
	defer w.wd.mark(&w.wd.writeSince, false)
	return w.ResponseWriter.Write(p)
}

func (w *idleResponseWriter) Flush() {
	w.wd.mark(&w.wd.writeSince, true)
	defer w.wd.mark(&w.wd.writeSince, false)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the wrapped writer, for [http.ResponseController].
func (w *idleResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
