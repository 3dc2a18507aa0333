package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/ferryhq/ferry/upload"
)

// How often progress is printed when standard error is not a terminal:
// plain lines for people reading a log, JSON lines (--json) for programs.
const (
	plainProgressInterval = 5 * time.Second
	jsonProgressInterval  = time.Second
)

// progressStyle is how a [progress] shows transfers.
type progressStyle int

const (
	// progressBars draws one bar per file in flight (mpb), on a terminal.
	progressBars progressStyle = iota
	// progressPlain prints a line per file every interval.
	progressPlain
	// progressJSON prints a JSON object per file every interval.
	progressJSON
)

// progress shows the progress of one or many transfers on standard error:
// bars with bytes, rate and ETA on a terminal (github.com/vbauerster/mpb),
// plain periodic lines elsewhere, or periodic JSON lines with --json. A nil
// *progress (--quiet) shows nothing, and its methods do nothing.
type progress struct {
	w        io.Writer
	style    progressStyle
	interval time.Duration
	bars     *mpb.Progress // for progressBars

	mu sync.Mutex // serializes lines written to w
}

// newProgress returns a progress display on w, or nil when quiet.
func newProgress(w io.Writer, quiet, jsonOut bool) *progress {
	switch {
	case quiet:
		return nil
	case jsonOut:
		return &progress{w: w, style: progressJSON, interval: jsonProgressInterval}
	case isTerminal(w):
		return newBars(w)
	default:
		return &progress{w: w, style: progressPlain, interval: plainProgressInterval}
	}
}

// newBars returns a display that draws bars on w, with options added to
// mpb's.
func newBars(w io.Writer, options ...mpb.ContainerOption) *progress {
	options = append([]mpb.ContainerOption{mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(200 * time.Millisecond)}, options...)
	return &progress{w: w, style: progressBars, bars: mpb.New(options...)}
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// start begins showing the transfer of name, total bytes (-1 when unknown),
// and returns its display; its Update method is a Progress callback of the
// Uploader or Downloader. The caller must End it.
func (p *progress) start(name string, total int64) *transferProgress {
	return p.startBar(name, total, false)
}

// startBar is start; a transient bar disappears once complete, as the bars
// of the many files of a sync do.
func (p *progress) startBar(name string, total int64, transient bool) *transferProgress {
	if p == nil {
		return nil
	}
	t := &transferProgress{p: p, name: name, total: total, started: time.Now()}
	if p.style == progressBars {
		t.bar = p.bars.AddBar(max(total, 0),
			mpb.PrependDecorators(
				decor.Name(name, decor.WC{C: decor.DindentRight | decor.DextraSpace}),
				decor.CountersKibiByte("% .1f / % .1f"),
			),
			mpb.AppendDecorators(
				decor.Percentage(decor.WC{W: 5}),
				decor.Name("  "),
				decor.AverageSpeed(decor.SizeB1024(0), "% .1f"),
				decor.OnComplete(decor.Name("  ETA "), "  "),
				decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO), "done"),
			),
			mpb.BarOptional(mpb.BarRemoveOnComplete(), transient),
		)
	} else {
		t.last = t.started
	}
	return t
}

// sync returns a callback for [upload.SyncOptions.Progress]: a display per
// file, removed from the terminal once the file is done.
func (p *progress) sync() func(key string, size int64) upload.FileProgress {
	if p == nil {
		return nil
	}
	return func(key string, size int64) upload.FileProgress { return p.startBar(key, size, true) }
}

// println prints a line, above the bars if there are any.
func (p *progress) println(line string) {
	if p.style == progressBars {
		if _, err := fmt.Fprintln(p.bars, line); err == nil {
			return
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, line)
}

// wait waits until every bar is drawn complete or aborted, so that what
// follows is printed below them.
func (p *progress) wait() {
	if p != nil && p.bars != nil {
		p.bars.Wait()
	}
}

// transferProgress is the display of one transfer. It implements
// [upload.FileProgress].
type transferProgress struct {
	p       *progress
	name    string
	started time.Time
	bar     *mpb.Bar

	mu    sync.Mutex
	total int64
	done  int64
	last  time.Time // of the last line printed
	ended bool
}

// Update records done bytes of total (-1 when unknown); it is a Progress
// callback of the Uploader and the Downloader. A nil display ignores it.
func (t *transferProgress) Update(done, total int64) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return
	}
	t.done = done
	if t.bar != nil {
		if total >= 0 && total != t.total {
			t.bar.SetTotal(total, false)
		}
		t.total = total
		t.bar.SetCurrent(max(done, 0))
		return
	}
	t.total = total
	if now := time.Now(); now.Sub(t.last) >= t.p.interval {
		t.last = now
		t.print(now)
	}
}

// updateFunc returns t.Update, or nil for a nil display, so that a transfer
// without one skips progress bookkeeping altogether.
func (t *transferProgress) updateFunc() func(done, total int64) {
	if t == nil {
		return nil
	}
	return t.Update
}

// End finishes the display: a bar is drawn complete (or left where it
// stopped, when err is not nil).
func (t *transferProgress) End(err error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return
	}
	t.ended = true
	if t.bar == nil {
		return
	}
	if err != nil {
		t.bar.Abort(false)
		return
	}
	t.bar.SetTotal(-1, true)
}

// jsonProgress is one line of --json progress: a transfer's key or file
// name, bytes done, total bytes (-1 when unknown), and the average rate so
// far in bytes per second.
type jsonProgress struct {
	Event          string  `json:"event"` // always "progress"
	Name           string  `json:"name"`
	Bytes          int64   `json:"bytes"`
	Total          int64   `json:"total"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	Seconds        float64 `json:"seconds"`
}

// print writes t's progress line; t.mu is held.
func (t *transferProgress) print(now time.Time) {
	elapsed := now.Sub(t.started)
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.style == progressJSON {
		rec := jsonProgress{Event: "progress", Name: t.name, Bytes: t.done, Total: t.total, Seconds: elapsed.Seconds()}
		if s := elapsed.Seconds(); s > 0 {
			rec.BytesPerSecond = float64(max(t.done, 0)) / s
		}
		_ = json.NewEncoder(p.w).Encode(rec)
		return
	}
	fmt.Fprintf(p.w, "%s: %s\n", t.name, progressText(t.done, t.total, elapsed))
}

// progressText describes done bytes of total (-1 when unknown) after
// elapsed: bytes, percentage and rate, such as
// "12 MiB / 100 MiB (12%)  35 MiB/s".
func progressText(done, total int64, elapsed time.Duration) string {
	text := humanize.IBytes(uint64(max(done, 0)))
	if total >= 0 {
		pct := int64(100)
		if total > 0 {
			pct = 100 * done / total
		}
		text += fmt.Sprintf(" / %s (%d%%)", humanize.IBytes(uint64(total)), pct)
	}
	if s := elapsed.Seconds(); s > 0.5 {
		text += fmt.Sprintf("  %s/s", humanize.IBytes(uint64(float64(max(done, 0))/s)))
	}
	return text
}

// say returns a printf-like function for messages about a transfer: on w,
// or above the bars when p draws them. Messages are printed even when
// quiet (p nil): they say what happened to the user's data.
func (p *progress) say(w io.Writer) func(format string, args ...any) {
	return func(format string, args ...any) {
		line := strings.TrimSuffix(fmt.Sprintf(format, args...), "\n")
		if p != nil {
			p.println(line)
			return
		}
		fmt.Fprintln(w, line)
	}
}

// localSize is the size in bytes of the regular file at path, or -1 when
// it is "-", not a regular file or cannot be read: a size the transfer
// learns later.
func localSize(path string) int64 {
	if path == "-" {
		return -1
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	return fi.Size()
}
