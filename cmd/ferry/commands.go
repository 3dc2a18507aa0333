package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"sort"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/download"
	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/upload"
)

// partSuffix names the file a download writes before it is complete.
const partSuffix = ".ferry-part"

// etagSuffix names the file, next to the part file, that holds the ETag of
// the object an interrupted download was writing.
const etagSuffix = ".etag"

func newUploadCommand(stdio stdio, lookupEnv lookupEnvFunc) *cobra.Command {
	var (
		flags       clientFlags
		contentType string
		resumeID    string
		ifNoneMatch bool
		jsonOut     bool
	)
	cmd := &cobra.Command{
		Use:   "upload [flags] FILE KEY",
		Short: "Upload FILE (- for standard input) as the object KEY",
		Long: `Upload FILE as the object KEY and print its key, size and CRC32C.

A file is sent in chunks over --concurrency parallel streams; standard
input (FILE "-") is read in sequence. Broken streams are retried and only
the chunks that were in flight are sent again. If the upload still fails,
its upload ID is printed and kept under the user's cache directory
(FERRY_CACHE_DIR overrides it): running the same command again, or with
--resume ID, sends only the chunks the server does not have; an upload
the server had completed (its answer lost) ends at once with its object,
once FILE is read to check it. If FILE changed since (size or
modification time), the old upload is aborted and a new one started. A progress bar shows on a terminal, a plain line every
5 seconds elsewhere, JSON lines with --json; --quiet shows none.
--json prints the result as one JSON object.`,
		Example: `  ferry upload ./video.mov videos/video.mov
  ferry upload --concurrency 8 --chunk-size 32MiB ./disk.img images/disk.img
  pg_dump mydb | ferry upload - backups/mydb.sql
  FERRY_SERVER=https://ferry.example.com FERRY_TOKEN=... ferry upload --json ./a.bin a.bin`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := flags.resolve(cmd, lookupEnv)
			if err != nil {
				return err
			}
			start := time.Now()
			file, key := args[0], args[1]
			if contentType == "" && file != "-" {
				contentType = mime.TypeByExtension(filepath.Ext(file))
			}
			client := cfg.uploadClient()
			if resumeID != "" {
				if file == "-" {
					return usagef("--resume needs a file: standard input cannot be read again")
				}
				if err := checkResume(cmd.Context(), client, resumeID, key); err != nil {
					return err
				}
			}
			auto := &autoResume{stderr: stdio.err, quiet: cfg.quiet, chunkSize: cfg.chunkSize}
			if resumeID == "" && file != "-" {
				if resumeID, err = auto.prepare(cmd.Context(), client, lookupEnv, cfg.server, file, key); err != nil {
					return err
				}
			}
			progress := newProgress(stdio.err, cfg.quiet, jsonOut)
			bar := progress.start(key, localSize(file))
			u := upload.NewUploader(client, upload.UploaderOptions{
				ChunkSize:   cfg.chunkSize,
				Concurrency: cfg.concurrency,
				Retry:       cfg.retryPolicy(stdio.err, progress),
				Progress:    bar.updateFunc(),
				Created:     auto.created,
			})
			obj, err := uploadFile(cmd.Context(), u, stdio.in, file, key, resumeID, upload.ObjectOptions{
				ContentType: contentType,
				IfNoneMatch: ifNoneMatch,
			})
			bar.End(err)
			progress.wait()
			auto.finish(err)
			if err != nil {
				return err
			}
			if jsonOut {
				return printJSONResult(stdio.out, obj, time.Since(start), resumeID != "")
			}
			fmt.Fprintf(stdio.out, "key=%q size=%d crc32c=%s\n", obj.GetKey(), obj.GetSize(), crcText(obj))
			return nil
		},
	}
	addClientFlags(cmd, &flags, uploadCommand)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as one JSON object on standard output: key, size, crc32c, seconds, resumed")
	cmd.Flags().StringVar(&contentType, "content-type", "", "MIME `type` of the object (default: from FILE's extension; fixed at creation, so unused with --resume)")
	cmd.Flags().StringVar(&resumeID, "resume", "", "continue the interrupted upload `ID` of KEY with the same FILE")
	cmd.Flags().BoolVar(&ifNoneMatch, "if-none-match", false, "fail with already_exists if KEY exists, instead of replacing it (fixed at creation)")
	return cmd
}

// uploadFile uploads file (or stdin for "-") as key, or resumes upload
// resumeID with it.
func uploadFile(ctx context.Context, u *upload.Uploader, stdin io.Reader, file, key, resumeID string, opts upload.ObjectOptions) (*ferryv1.Object, error) {
	if file == "-" {
		return u.UploadStream(ctx, key, stdin, opts)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() { // a pipe or a device: its size is unknown
		if resumeID != "" {
			return nil, usagef("--resume needs a regular file: %s cannot be read again", file)
		}
		return u.UploadStream(ctx, key, f, opts)
	}
	if resumeID != "" {
		return u.Resume(ctx, resumeID, f, fi.Size())
	}
	return u.Upload(ctx, key, f, fi.Size(), opts)
}

// checkResume checks that the open upload resumeID writes key.
func checkResume(ctx context.Context, client ferryv1connect.UploadServiceClient, resumeID, key string) error {
	res, err := client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: resumeID, PageSize: 1}))
	if err != nil {
		return err
	}
	if got := res.Msg.GetUpload().GetSpec().GetKey(); got != key {
		return usagef("upload %s writes the key %q, not %q", resumeID, got, key)
	}
	return nil
}

func newDownloadCommand(stdio stdio, lookupEnv lookupEnvFunc) *cobra.Command {
	var (
		flags   clientFlags
		resume  bool
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "download [flags] KEY FILE",
		Short: "Download the object KEY to FILE (- for standard output)",
		Long: `Download the object KEY to FILE, check its CRC32C and print its key, size
and CRC32C.

A file is written over --concurrency parallel ranged streams into
FILE` + partSuffix + `, which is renamed to FILE once every byte is checked.
While it runs, the object's ETag and how many bytes from its start are on
disk without a gap are kept in FILE` + partSuffix + etagSuffix + `: if the
download is interrupted (an error, Ctrl-C, a crash), running the same
command again continues from there, provided the object did not change;
if it did, the download starts anew. Standard output (FILE "-") is written
in order over one stream. Broken streams are resumed where they stopped,
pinned to the object's ETag so that a download never mixes two versions.
--json prints the result as one JSON object and progress as JSON lines.`,
		Example: `  ferry download backups/db.tar.zst db.tar.zst
  ferry download --concurrency 8 --chunk-size 32MiB videos/raw.mov raw.mov
  ferry download logs/today.txt - | grep ERROR`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := flags.resolve(cmd, lookupEnv)
			if err != nil {
				return err
			}
			start := time.Now()
			key, file := args[0], args[1]
			summary := stdio.out
			if file == "-" {
				if resume {
					return usagef("--resume needs a file")
				}
				summary = stdio.err
			}
			progress := newProgress(stdio.err, cfg.quiet, jsonOut)
			bar := progress.start(key, -1)
			opts := download.DownloaderOptions{
				Concurrency: cfg.concurrency,
				RangeSize:   cfg.chunkSize,
				Retry:       cfg.retryPolicy(stdio.err, progress),
				Progress:    bar.updateFunc(),
			}
			var (
				obj     *ferryv1.Object
				resumed bool
			)
			if file == "-" {
				obj, err = download.NewDownloader(cfg.downloadClient(), opts).Download(cmd.Context(), key, stdio.out)
			} else {
				obj, resumed, err = downloadFile(cmd.Context(), cfg.downloadClient(), opts, key, file, resume, progress.say(stdio.err))
			}
			bar.End(err)
			progress.wait()
			if err != nil {
				return err
			}
			switch {
			case jsonOut:
				return printJSONResult(summary, obj, time.Since(start), resumed)
			case !cfg.quiet || file != "-":
				fmt.Fprintf(summary, "key=%q size=%d crc32c=%s\n", obj.GetKey(), obj.GetSize(), crcText(obj))
			}
			return nil
		},
	}
	addClientFlags(cmd, &flags, downloadCommand)
	cmd.Flags().BoolVar(&resume, "resume", false, "continue an interrupted download from FILE"+partSuffix+" (automatic when its ETag file is there)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as one JSON object (key, size, crc32c, seconds, resumed) and progress as JSON lines on standard error")
	return cmd
}

// partState is what FILE+partSuffix+etagSuffix holds while a download into
// FILE+partSuffix runs or after it was interrupted: the object's ETag and
// the number of bytes from the object's start that are on disk without a
// gap. An older ferry wrote the bare ETag, meaning the whole part file.
type partState struct {
	ETag    string `json:"etag"`
	Written int64  `json:"written"`
}

// loadPartState reads the state at path; ok is false when there is none.
func loadPartState(path string, partSize int64) (s partState, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return s, false
	}
	if json.Unmarshal(b, &s) != nil {
		s = partState{ETag: string(b), Written: partSize}
	}
	if s.ETag == "" || s.Written < 0 {
		return s, false
	}
	s.Written = min(s.Written, partSize)
	return s, true
}

// downloadFile downloads key into file+partSuffix, then renames it to file.
// As ranges complete, it syncs the part file and records the object's ETag
// and the gapless prefix in file+partSuffix+etagSuffix, so that running the
// same command again after an error, Ctrl-C or a crash continues from that
// prefix if the object's ETag is still that one, or starts anew if the
// object changed. resume asks to continue a part file even without that
// record. It reports whether it continued an earlier download.
func downloadFile(ctx context.Context, client ferryv1connect.DownloadServiceClient, opts download.DownloaderOptions, key, file string, resume bool, say func(format string, args ...any)) (*ferryv1.Object, bool, error) {
	part := file + partSuffix
	stateFile := part + etagSuffix
	ifMatch := ""
	offset := int64(-1) // -1: the part file's size
	if fi, err := os.Stat(part); err == nil {
		if st, ok := loadPartState(stateFile, fi.Size()); ok {
			ifMatch, offset, resume = st.ETag, st.Written, true
		}
	}
	flag := os.O_RDWR | os.O_CREATE | os.O_TRUNC
	if resume {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(part, flag, 0o644)
	if err != nil {
		if resume && errors.Is(err, os.ErrNotExist) {
			return nil, false, fmt.Errorf("nothing to resume: %w", err)
		}
		return nil, false, err
	}
	defer f.Close()
	opts.Checkpoint = func(etag string, written int64) {
		// The bytes must be on disk before the record says they are.
		if written > 0 && f.Sync() != nil {
			return
		}
		if b, err := json.Marshal(partState{ETag: etag, Written: written}); err == nil {
			_ = writeFileAtomic(stateFile, b, 0o644)
		}
	}
	d := download.NewDownloader(client, opts)
	var obj *ferryv1.Object
	if resume {
		if offset < 0 {
			fi, err := f.Stat()
			if err != nil {
				return nil, false, err
			}
			offset = fi.Size()
		}
		if err := f.Truncate(offset); err != nil {
			return nil, false, err
		}
		say("continuing the download from the %d bytes in %s\n", offset, part)
		obj, err = d.ResumeAt(ctx, key, f, offset, ifMatch)
		if ifMatch != "" && errors.Is(err, download.ErrObjectChanged) {
			say("%s changed since the download was interrupted: starting anew\n", key)
			resume = false
			if err = f.Truncate(0); err == nil {
				obj, err = d.DownloadAt(ctx, key, f)
			}
		}
	} else {
		obj, err = d.DownloadAt(ctx, key, f)
	}
	if err != nil {
		var interrupted *download.InterruptedError
		if errors.As(err, &interrupted) && !errors.Is(err, download.ErrObjectChanged) && f.Truncate(interrupted.Written) == nil {
			b, _ := json.Marshal(partState{ETag: interrupted.ETag, Written: interrupted.Written})
			if interrupted.ETag != "" && f.Sync() == nil && writeFileAtomic(stateFile, b, 0o644) == nil {
				say("The first %d bytes are kept in %s: run the same command again to continue.\n", interrupted.Written, part)
			} else {
				os.Remove(stateFile)
				say("The first %d bytes are kept in %s: run the same command with --resume to continue.\n", interrupted.Written, part)
			}
		} else {
			f.Close()
			os.Remove(part)
			os.Remove(stateFile)
		}
		return nil, false, err
	}
	if err := f.Sync(); err != nil {
		return nil, false, err
	}
	if err := f.Close(); err != nil {
		return nil, false, err
	}
	if err := os.Rename(part, file); err != nil {
		return nil, false, err
	}
	os.Remove(stateFile)
	return obj, resume, nil
}

func newStatCommand(stdio stdio, lookupEnv lookupEnvFunc) *cobra.Command {
	var flags clientFlags
	cmd := &cobra.Command{
		Use:     "stat [flags] KEY",
		Short:   "Print the attributes of the object KEY",
		Example: `  ferry stat videos/video.mov`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := flags.resolve(cmd, lookupEnv)
			if err != nil {
				return err
			}
			res, err := cfg.objectClient().StatObject(cmd.Context(), connect.NewRequest(&ferryv1.StatObjectRequest{Key: args[0]}))
			if err != nil {
				return err
			}
			obj := res.Msg.GetObject()
			w := stdio.out
			fmt.Fprintf(w, "key: %s\nsize: %d\netag: %s\ncontent-type: %s\nlast-modified: %s\ncrc32c: %s\n",
				obj.GetKey(), obj.GetSize(), obj.GetEtag(), obj.GetContentType(),
				obj.GetLastModified().AsTime().Format(time.RFC3339), crcText(obj))
			keys := make([]string, 0, len(obj.GetMetadata()))
			for k := range obj.GetMetadata() {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(w, "metadata.%s: %s\n", k, obj.GetMetadata()[k])
			}
			return nil
		},
	}
	addClientFlags(cmd, &flags, plainCommand)
	return cmd
}

func newListCommand(stdio stdio, lookupEnv lookupEnvFunc) *cobra.Command {
	var flags clientFlags
	cmd := &cobra.Command{
		Use:   "ls [flags] [PREFIX]",
		Short: "List the objects whose keys start with PREFIX: size, last modified, key",
		Example: `  ferry ls
  ferry ls videos/`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := flags.resolve(cmd, lookupEnv)
			if err != nil {
				return err
			}
			req := &ferryv1.ListObjectsRequest{}
			if len(args) > 0 {
				req.Prefix = args[0]
			}
			client := cfg.objectClient()
			for {
				res, err := client.ListObjects(cmd.Context(), connect.NewRequest(req))
				if err != nil {
					return err
				}
				for _, obj := range res.Msg.GetObjects() {
					fmt.Fprintf(stdio.out, "%12d  %s  %s\n", obj.GetSize(), obj.GetLastModified().AsTime().Format(time.RFC3339), obj.GetKey())
				}
				if req.PageToken = res.Msg.GetNextPageToken(); req.PageToken == "" {
					return nil
				}
			}
		},
	}
	addClientFlags(cmd, &flags, plainCommand)
	return cmd
}

func newRemoveCommand(stdio stdio, lookupEnv lookupEnvFunc) *cobra.Command {
	var flags clientFlags
	cmd := &cobra.Command{
		Use:     "rm [flags] KEY",
		Short:   "Delete the object KEY (deleting a missing key succeeds)",
		Example: `  ferry rm videos/video.mov`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := flags.resolve(cmd, lookupEnv)
			if err != nil {
				return err
			}
			_, err = cfg.objectClient().DeleteObject(cmd.Context(), connect.NewRequest(&ferryv1.DeleteObjectRequest{Key: args[0]}))
			return err
		},
	}
	addClientFlags(cmd, &flags, plainCommand)
	return cmd
}

// crcText is the object's CRC32C in hex, or "-" when it has none.
func crcText(obj *ferryv1.Object) string {
	if obj.Crc32C == nil {
		return "-"
	}
	return fmt.Sprintf("%08x", obj.GetCrc32C())
}

// jsonResult is the result of a transfer that --json prints: the object's
// key, size in bytes and CRC32C in hex ("" when it has none), how long the
// transfer took in seconds, and whether it continued an earlier one.
type jsonResult struct {
	Key     string  `json:"key"`
	Size    int64   `json:"size"`
	CRC32C  string  `json:"crc32c"`
	Seconds float64 `json:"seconds"`
	Resumed bool    `json:"resumed"`
}

// printJSONResult prints obj's jsonResult as one line on w.
func printJSONResult(w io.Writer, obj *ferryv1.Object, elapsed time.Duration, resumed bool) error {
	r := jsonResult{Key: obj.GetKey(), Size: obj.GetSize(), Seconds: elapsed.Seconds(), Resumed: resumed}
	if obj.Crc32C != nil {
		r.CRC32C = crcText(obj)
	}
	return json.NewEncoder(w).Encode(r)
}
