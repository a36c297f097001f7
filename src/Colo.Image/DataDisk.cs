namespace Colo.Image;

/// <summary>Result of <see cref="DataDisk.CheckAsync"/>: whether the file system is consistent, and e2fsck's words.</summary>
/// <param name="Clean">True when the forced read-only check found nothing to fix (exit code 0).</param>
/// <param name="ExitCode">Exit code of the forced read-only check (<c>e2fsck -fn</c>; 0 clean, 4 errors left uncorrected, 8+ failure).</param>
/// <param name="JournalReplayed">True when the journal had to be replayed first (the disk was in use when its VM died).</param>
/// <param name="Output">Output of both e2fsck runs, trimmed to the last 2000 characters.</param>
public sealed record FsckResult(bool Clean, int ExitCode, bool JournalReplayed, string Output);

/// <summary>
/// The guest's data disk: a raw image holding one ext4 file system (label <see cref="Label"/>), made and checked
/// with Debian's e2fsprogs (<c>mkfs.ext4</c>, <c>e2fsck</c>) on the host. The guest mounts it on <c>/data</c> and
/// keeps Redis' append-only file there (see <see cref="GuestFiles"/>).
/// </summary>
public static class DataDisk
{
    /// <summary>File system label the guest looks for.</summary>
    public const string Label = "colodata";

    /// <summary>Default size, MiB.</summary>
    public const int DefaultSizeMiB = 256;

    private static readonly TimeSpan ToolTimeout = TimeSpan.FromMinutes(2);

    /// <summary>
    /// Creates (or replaces) <paramref name="path"/> as a sparse raw image of <paramref name="sizeMiB"/> MiB with an
    /// empty ext4 file system. Inode tables and journal are initialised now (<c>lazy_itable_init=0,lazy_journal_init=0</c>)
    /// so the guest kernel does no background initialisation writes (which would differ between PVM and SVM).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sizeMiB"/> is outside 16..1048576.</exception>
    /// <exception cref="ImageBuildException">mkfs.ext4 is missing or failed (step <c>data-disk</c>).</exception>
    public static async Task CreateAsync(string path, int sizeMiB, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sizeMiB, 16);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sizeMiB, 1048576);
        string tmp = path + ".tmp";
        File.Delete(tmp);
        using (var f = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            f.SetLength((long)sizeMiB * 1024 * 1024);
        try
        {
            await ProcessRunner.RunCheckedAsync("data-disk", Tool("mkfs.ext4"),
                ["-F", "-q", "-L", Label, "-E", "lazy_itable_init=0,lazy_journal_init=0", "-m", "0", tmp], ToolTimeout, ct).ConfigureAwait(false);
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            File.Delete(tmp);
        }
    }

    /// <summary>
    /// Checks the file system in <paramref name="path"/> without changing it: copies the image to
    /// <paramref name="scratchPath"/> (sparse), replays the journal there (<c>e2fsck -E journal_only</c>, as the kernel
    /// would at mount), then runs a forced read-only full check (<c>e2fsck -fn</c>). The scratch copy is deleted.
    /// </summary>
    /// <exception cref="ImageBuildException">e2fsck is missing, could not run, or timed out (step <c>fsck</c>).</exception>
    public static async Task<FsckResult> CheckAsync(string path, string scratchPath, CancellationToken ct)
    {
        try
        {
            await ProcessRunner.RunCheckedAsync("fsck", "/bin/cp", ["--sparse=always", "-f", path, scratchPath], ToolTimeout, ct).ConfigureAwait(false);
            var replay = await ProcessRunner.RunAsync("fsck", Tool("e2fsck"), ["-E", "journal_only", "-y", scratchPath], ToolTimeout, ct).ConfigureAwait(false);
            if (replay.ExitCode >= 8)
                return new FsckResult(false, replay.ExitCode, false, ProcessRunner.Tail(replay.StdOut + replay.StdErr));
            bool replayed = (replay.StdOut + replay.StdErr).Contains("recovering journal", StringComparison.OrdinalIgnoreCase);
            var check = await ProcessRunner.RunAsync("fsck", Tool("e2fsck"), ["-f", "-n", scratchPath], ToolTimeout, ct).ConfigureAwait(false);
            string output = ProcessRunner.Tail(replay.StdOut + replay.StdErr + check.StdOut + check.StdErr);
            return new FsckResult(check.ExitCode == 0, check.ExitCode, replayed, output);
        }
        finally
        {
            File.Delete(scratchPath);
        }
    }

    private static string Tool(string name)
    {
        foreach (var dir in new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin" })
        {
            string p = Path.Combine(dir, name);
            if (File.Exists(p))
                return p;
        }
        throw new ImageBuildException("data-disk", $"{name} not found (install Debian's e2fsprogs)");
    }
}
