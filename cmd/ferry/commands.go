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
--resume ID, sends only the chunks the server does not have. If FILE
changed since (size or modification time), the old upload is aborted and
a new one started. --json prints the result as one JSON object.`,
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
			progress := newProgress(stdio.err, "uploaded", cfg.quiet)
			defer progress.end()
			client := cfg.uploadClient()
			u := upload.NewUploader(client, upload.UploaderOptions{
				ChunkSize:   cfg.chunkSize,
				Concurrency: cfg.concurrency,
				Retry:       cfg.retryPolicy(stdio.err, progress),
				Progress:    progress.progressFunc(),
			})
			if resumeID != "" {
				if file == "-" {
					return usagef("--resume needs a file: standard input cannot be read again")
				}
				if err := checkResume(cmd.Context(), client, resumeID, key); err != nil {
					return err
				}
			}
			auto := autoResume{stderr: stdio.err, quiet: cfg.quiet}
			if resumeID == "" && file != "-" {
				if resumeID, err = auto.prepare(cmd.Context(), client, lookupEnv, cfg.server, file, key); err != nil {
					return err
				}
			}
			obj, err := uploadFile(cmd.Context(), u, stdio.in, file, key, resumeID, upload.ObjectOptions{
				ContentType: contentType,
				IfNoneMatch: ifNoneMatch,
			})
			progress.end()
			auto.finish(err, cfg.chunkSize)
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
		flags  clientFlags
		resume bool
	)
	cmd := &cobra.Command{
		Use:   "download [flags] KEY FILE",
		Short: "Download the object KEY to FILE (- for standard output)",
		Long: `Download the object KEY to FILE and check its CRC32C.

A file is written over --concurrency parallel ranged streams into
FILE` + partSuffix + `, which is renamed to FILE once every byte is checked. If
the download fails, the bytes received without a gap are kept there, with
the object's ETag next to them, and running the same command again (or
--resume) continues from them if the object did not change. Standard output (FILE "-") is written in
order over one stream. Broken streams are resumed where they stopped,
pinned to the object's ETag so that a download never mixes two versions.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := flags.resolve(cmd, lookupEnv)
			if err != nil {
				return err
			}
			key, file := args[0], args[1]
			summary := stdio.out
			if file == "-" {
				if resume {
					return usagef("--resume needs a file")
				}
				summary = stdio.err
			}
			progress := newProgress(stdio.err, "downloaded", cfg.quiet)
			defer progress.end()
			d := download.NewDownloader(cfg.downloadClient(), download.DownloaderOptions{
				Concurrency: cfg.concurrency,
				RangeSize:   cfg.chunkSize,
				Retry:       cfg.retryPolicy(stdio.err, progress),
				Progress:    progress.progressFunc(),
			})
			var obj *ferryv1.Object
			if file == "-" {
				obj, err = d.Download(cmd.Context(), key, stdio.out)
			} else {
				obj, err = downloadFile(cmd.Context(), d, key, file, resume, stdio.err)
			}
			progress.end()
			if err != nil {
				return err
			}
			if !cfg.quiet || file != "-" {
				fmt.Fprintf(summary, "key=%q size=%d crc32c=%s\n", obj.GetKey(), obj.GetSize(), crcText(obj))
			}
			return nil
		},
	}
	addClientFlags(cmd, &flags, downloadCommand)
	cmd.Flags().BoolVar(&resume, "resume", false, "continue an interrupted download from FILE"+partSuffix)
	return cmd
}

// downloadFile downloads key into file+partSuffix, then renames it to file.
// When the download is interrupted, the object's ETag is kept in
// file+partSuffix+etagSuffix, and running the same command again (with or
// without resume) continues from the part file if the object's ETag is
// still that one, or starts anew if the object changed.
func downloadFile(ctx context.Context, d *download.Downloader, key, file string, resume bool, stderr io.Writer) (*ferryv1.Object, error) {
	part := file + partSuffix
	etagFile := part + etagSuffix
	ifMatch := ""
	if b, err := os.ReadFile(etagFile); err == nil && len(b) > 0 {
		if _, err := os.Stat(part); err == nil {
			ifMatch, resume = string(b), true
		}
	}
	flag := os.O_RDWR | os.O_CREATE | os.O_TRUNC
	if resume {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(part, flag, 0o644)
	if err != nil {
		if resume && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("nothing to resume: %w", err)
		}
		return nil, err
	}
	defer f.Close()
	var obj *ferryv1.Object
	if resume {
		var fi os.FileInfo
		if fi, err = f.Stat(); err != nil {
			return nil, err
		}
		if ifMatch != "" {
			fmt.Fprintf(stderr, "continuing the download from the %d bytes in %s\n", fi.Size(), part)
		}
		obj, err = d.ResumeAt(ctx, key, f, fi.Size(), ifMatch)
		if ifMatch != "" && errors.Is(err, download.ErrObjectChanged) {
			fmt.Fprintf(stderr, "%s changed since the download was interrupted: starting anew\n", key)
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
			if interrupted.ETag != "" && os.WriteFile(etagFile, []byte(interrupted.ETag), 0o644) == nil {
				fmt.Fprintf(stderr, "The first %d bytes are kept in %s: run the same command again to continue.\n", interrupted.Written, part)
			} else {
				os.Remove(etagFile)
				fmt.Fprintf(stderr, "The first %d bytes are kept in %s: run the same command with --resume to continue.\n", interrupted.Written, part)
			}
		} else {
			f.Close()
			os.Remove(part)
			os.Remove(etagFile)
		}
		return nil, err
	}
	os.Remove(etagFile)
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return obj, os.Rename(part, file)
}

func newStatCommand(stdio stdio, lookupEnv lookupEnvFunc) *cobra.Command {
	var flags clientFlags
	cmd := &cobra.Command{
		Use:   "stat [flags] KEY",
		Short: "Print the attributes of the object KEY",
		Args:  exactArgs(1),
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
		Args:  maxArgs(1),
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
		Use:   "rm [flags] KEY",
		Short: "Delete the object KEY (deleting a missing key succeeds)",
		Args:  exactArgs(1),
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
