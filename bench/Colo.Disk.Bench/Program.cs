// Benchmark of the disk replication path (docs/DISK.md, "Benchmark"): prints figures, is not a test.
//   1. initial sync: PrimaryDisk.InitialSyncAsync over a loopback LinkConnection into a ReplicaDisk, per GiB;
//   2. replication overhead on guest writes: our NBD server serving a plain RawFileBlockDevice (off) vs
//      PrimaryDisk's ForwardingBlockDevice forwarding to a live ReplicaDisk (on), driven by `qemu-img bench`;
//   3. commit cost: ReplicaDisk.Commit per MiB of buffered PVM writes, Failover per MiB of SVM overlay.
// Usage: dotnet run -c Release --project bench/Colo.Disk.Bench -- [--dir /var/tmp] [--size-mib 1024]
//        [--sparse-percent 10] [--nbd-size-mib 256] [--count-4k 100000] [--count-1m 1024] [--depth 16]
//        [--commit-mib 64] [--commit-ms 0] [--repeat 3] [--only sync,nbd,commit]
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Colo.Disk;
using Colo.Disk.Bench;
using Colo.Nbd;
using Colo.Node;
using Microsoft.Extensions.Logging.Abstractions;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
BenchOptions opts;
try
{
    opts = BenchOptions.Parse(args);
}
catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine("usage: Colo.Disk.Bench [--dir /var/tmp] [--size-mib 1024] [--sparse-percent 10] [--nbd-size-mib 256] [--count-4k 100000] [--count-1m 1024] [--depth 16] [--commit-mib 64] [--commit-ms 0] [--repeat 3] [--only sync,nbd,commit]");
    return 2;
}

using var cts = new CancellationTokenSource();
// Ctrl-C or SIGTERM: stop at the next step and let the finally blocks stop the servers and delete the files.
void OnSignal(PosixSignalContext context)
{
    context.Cancel = true;
    cts.Cancel();
}

using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
CancellationToken ct = cts.Token;
var clock = Stopwatch.StartNew();
string dir = Path.GetFullPath(opts.Dir);
string work = Path.Combine(dir, $"colo-disk-bench-{Environment.ProcessId}");
var (fsType, fsDevice) = HostInfo.FileSystem(dir);
bool tmpfs = fsType is "tmpfs" or "ramfs";

Console.WriteLine("Colo.Disk.Bench: disk replication figures (median of repeats; numbers from a shared 2-core machine are noisy)");
Console.WriteLine($"command:    {CommandLine()}");
Console.WriteLine($"equivalent: dotnet run -c Release --project bench/Colo.Disk.Bench -- {opts.ToArgs()}");
Console.WriteLine($"date:       {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC");
Console.WriteLine($"host:       {Environment.ProcessorCount} cpus ({HostInfo.CpuModel()}), {HostInfo.MemTotal()}, {RuntimeInformation.OSDescription}");
Console.WriteLine($"runtime:    {RuntimeInformation.FrameworkDescription}; {HostInfo.ToolVersion("qemu-img", "--version")}");
Console.WriteLine($"directory:  {work} ({fsType} on {fsDevice})");
Console.WriteLine($"load average at start: {HostInfo.LoadAverage()}");
Console.WriteLine();

var tables = new List<string>();
int exitCode = 0;
Directory.CreateDirectory(work);
try
{
    if (opts.Runs("sync"))
    {
        await SyncBenchAsync();
    }

    if (opts.Runs("nbd"))
    {
        await NbdBenchAsync();
    }

    if (opts.Runs("commit"))
    {
        await CommitBenchAsync();
    }

    Console.WriteLine();
    Console.WriteLine($"== summary (median of {opts.Repeat}; min–max in brackets where shown)");
    foreach (string line in tables)
    {
        Console.WriteLine(line);
    }
}
catch (OperationCanceledException) when (ct.IsCancellationRequested)
{
    Console.WriteLine("interrupted");
    exitCode = 130;
}
finally
{
    try
    {
        Directory.Delete(work, recursive: true);
    }
    catch (IOException e)
    {
        Console.Error.WriteLine($"could not delete {work}: {e.Message}");
    }

    Console.WriteLine();
    Console.WriteLine($"load average at end: {HostInfo.LoadAverage()}; total {clock.Elapsed.TotalSeconds:F0} s; files in {work} deleted");
}

return exitCode;

// ---------------------------------------------------------------------------------------------------------------
// 1. Initial sync
async Task SyncBenchAsync()
{
    long size = (long)opts.SizeMiB << 20;
    string full = Path.Combine(work, "sync-full.raw");
    string sparse = Path.Combine(work, "sync-sparse.raw");
    Console.WriteLine($"== 1. initial sync: {opts.SizeMiB} MiB raw image, PrimaryDisk.InitialSyncAsync -> loopback LinkConnection -> ReplicaDisk, timed until the replica's end of sync (base fsynced)");
    var fill = Stopwatch.StartNew();
    Images.FillFull(full, size, seed: 1);
    long sparseData = Images.FillSparse(sparse, size, opts.SparsePercent, seed: 2);
    Console.WriteLine($"images written and fsynced in {fill.Elapsed.TotalSeconds:F1} s: full ({opts.SizeMiB} MiB of data), sparse ({sparseData >> 20} MiB of data in {opts.SizeMiB} MiB, the rest holes)");

    var variants = new List<(string Name, string Path, bool Evict)> { ("full, source in page cache", full, false) };
    if (!tmpfs)
    {
        variants.Add(("full, source evicted", full, true));
    }

    variants.Add(($"sparse ({opts.SparsePercent}% data)", sparse, false));
    // Warm-up (JIT, connection paths): one untimed sync of the sparse image.
    var warm = await ReplicationPair.StartAsync(sparse, work, "sync", ct);
    try
    {
        await warm.SyncAsync(ct);
    }
    finally
    {
        await warm.DisposeAsync();
        File.Delete(warm.ReplicaImage);
    }

    var s = new Samples();
    var copyOk = new Dictionary<string, bool>();
    for (int r = 1; r <= opts.Repeat; r++)
    {
        foreach (var v in variants)
        {
            ct.ThrowIfCancellationRequested();
            if (v.Evict && !Images.Evict(v.Path))
            {
                Console.WriteLine("posix_fadvise(DONTNEED) refused; the 'evicted' figure is not cold");
            }

            var pair = await ReplicationPair.StartAsync(v.Path, work, "sync", ct);
            (long sent, double seconds) = (0, 0);
            try
            {
                (sent, seconds) = await pair.SyncAsync(ct);
            }
            finally
            {
                await pair.DisposeAsync();
            }

            bool same = Images.Equal(v.Path, pair.ReplicaImage);
            File.Delete(pair.ReplicaImage);
            copyOk[v.Name] = copyOk.GetValueOrDefault(v.Name, true) && same;
            double gib = size / (double)(1L << 30);
            Console.WriteLine($"run {r} {v.Name,-28} sent {sent / 1048576.0,7:F1} MiB in {seconds,6:F2} s: {seconds / gib,6:F2} s per GiB of disk, {opts.SizeMiB / seconds,7:F1} MiB/s of disk, {sent / 1048576.0 / seconds,7:F1} MiB/s sent; replica base {(same ? "OK (equal to the source)" : "MISMATCH")}");
            s.Add(v.Name + "/s", seconds);
            s.Add(v.Name + "/sent", sent / 1048576.0);
            if (!same)
            {
                exitCode = 1;
            }
        }
    }

    File.Delete(full);
    File.Delete(sparse);
    tables.Add("");
    tables.Add($"Initial sync of a {opts.SizeMiB} MiB image ({fsType}):");
    tables.Add("");
    tables.Add("| image | data sent | time | s per GiB of disk | MiB/s of disk | MiB/s of data sent | replica = source |");
    tables.Add("|---|---|---|---|---|---|---|");
    foreach (var v in variants)
    {
        double sec = s.Median(v.Name + "/s");
        double sent = s.Median(v.Name + "/sent");
        tables.Add($"| {v.Name} | {sent:F0} MiB | {sec:F2} s [{s.Range(v.Name + "/s", "F2")}] | {sec / (size / (double)(1L << 30)):F2} | {opts.SizeMiB / sec:F0} | {sent / sec:F0} | {(copyOk[v.Name] ? "OK" : "MISMATCH")} |");
    }

    Console.WriteLine();
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Replication overhead on guest writes (qemu-img bench over NBD)
async Task NbdBenchAsync()
{
    long size = (long)opts.NbdSizeMiB << 20;
    string offImage = Path.Combine(work, "nbd-off.raw");
    string onImage = Path.Combine(work, "nbd-on.raw");
    string offSocket = Path.Combine(work, "off.sock");
    Console.WriteLine($"== 2. replication overhead: qemu-img bench -d {opts.Depth} over nbd+unix against our NBD server serving a {opts.NbdSizeMiB} MiB image");
    Console.WriteLine("   off: RawFileBlockDevice (replication off); on: PrimaryDisk's ForwardingBlockDevice, forwarding to a ReplicaDisk over a loopback link");
    Console.WriteLine(opts.CommitMs > 0
        ? $"   with replication on, a checkpoint (barrier + ReplicaDisk.Commit) every {opts.CommitMs} ms during the run, and one after it (not timed)"
        : "   with replication on, the replica buffers the whole run; a checkpoint (barrier + ReplicaDisk.Commit) follows each run (not timed; drain and commit printed)");
    Images.FillFull(offImage, size, seed: 3);
    Images.FillFull(onImage, size, seed: 3);

    using var stopServing = new CancellationTokenSource();
    RawFileBlockDevice offDevice = RawFileBlockDevice.Open(offImage);
    Task offServing = Task.CompletedTask;
    ReplicationPair? pair = null;
    try
    {
        offServing = new NbdServer(offDevice, "bench", NullLogger.Instance).ServeUnixAsync(offSocket, stopServing.Token);
        pair = await ReplicationPair.StartAsync(onImage, work, "nbd", ct);
        (long sent, double syncSeconds) = await pair.SyncAsync(ct);
        Console.WriteLine($"   forwarding on: initial sync of {sent >> 20} MiB done in {syncSeconds:F2} s");
        string offUri = QemuImg.NbdUnixUri(offSocket, "bench");
        string onUri = QemuImg.NbdUnixUri(pair.PrimarySocket, pair.Primary.ExportName);

        // Strided 4 KiB offsets as in bench/Colo.Nbd.Bench: qemu-img bench has no random mode; a step of 40009
        // blocks (a prime) puts consecutive requests far apart and visits every block. 1 MiB: sequential.
        string step4k = (40009L * 4096 % size).ToString(CultureInfo.InvariantCulture);
        var tests = new List<(string Name, string[] Args, int Count, int BlockBytes, bool Write)>
        {
            ("4k read (strided)", ["-s", "4k", "-S", step4k], opts.Count4k, 4096, false),
            ("4k write (strided)", ["-w", "-s", "4k", "-S", step4k], opts.Count4k, 4096, true),
            ("1M read (sequential)", ["-s", "1M"], opts.Count1m, 1 << 20, false),
            ("1M write (sequential)", ["-w", "-s", "1M"], opts.Count1m, 1 << 20, true),
        };

        // Warm-up: JIT, page cache, connection paths, the forwarding pipeline.
        foreach (var t in tests)
        {
            await QemuBenchAsync(offUri, t.Args, Math.Max(100, t.Count / 20));
            await QemuBenchAsync(onUri, t.Args, Math.Max(100, t.Count / 20));
        }

        await pair.CheckpointAsync(ct);

        var s = new Samples();
        for (int r = 1; r <= opts.Repeat; r++)
        {
            foreach (var t in tests)
            {
                // Alternate which mode goes first so drift in machine load does not favour one.
                string[] order = r % 2 == 1 ? ["off", "on"] : ["on", "off"];
                foreach (string mode in order)
                {
                    ct.ThrowIfCancellationRequested();
                    string extra = "";
                    double seconds;
                    if (mode == "off")
                    {
                        seconds = await QemuBenchAsync(offUri, t.Args, t.Count);
                    }
                    else
                    {
                        using var stopCommitter = new CancellationTokenSource();
                        Task<List<CheckpointResult>> committer = opts.CommitMs > 0
                            ? pair.RunCommitterAsync(opts.CommitMs, stopCommitter.Token)
                            : Task.FromResult(new List<CheckpointResult>());
                        try
                        {
                            seconds = await QemuBenchAsync(onUri, t.Args, t.Count);
                        }
                        finally
                        {
                            await stopCommitter.CancelAsync();
                        }

                        List<CheckpointResult> during = await committer;
                        pair.ThrowIfFailed();
                        if (t.Write)
                        {
                            CheckpointResult after = await pair.CheckpointAsync(ct);
                            extra = $" | after: drain {after.DrainMs,5:F0} ms, commit {after.CommitMs,6:F0} ms of {after.BufferBytes / 1048576.0:F0} MiB ({after.BufferSpilledBytes / 1048576.0:F0} MiB spilled)";
                            if (during.Count > 0)
                            {
                                extra += $" | during: {during.Count} commits, longest {during.Max(c => c.CommitMs):F0} ms";
                            }
                        }
                    }

                    double iops = t.Count / seconds;
                    Console.WriteLine($"run {r} {t.Name,-22} {mode,-3} {t.Count,7} ops {seconds,7:F3} s {iops,8:F0} IOPS {iops * t.BlockBytes / 1048576.0,8:F1} MiB/s{extra}");
                    s.Add($"{t.Name}/{mode}", iops);
                }
            }
        }

        // The replica's base must now equal the primary's image (every write committed at the last checkpoint).
        await pair.DisposeAsync();
        bool same = Images.Equal(onImage, pair.ReplicaImage);
        Console.WriteLine($"   after all runs: replica base {(same ? "OK (equal to the primary's image)" : "MISMATCH")}");
        if (!same)
        {
            exitCode = 1;
        }

        tables.Add("");
        tables.Add($"Guest I/O through our NBD server, replication off vs on ({opts.NbdSizeMiB} MiB image on {fsType}, qemu-img bench depth {opts.Depth}{(opts.CommitMs > 0 ? $", commit every {opts.CommitMs} ms" : ", no commit during the run")}; replica after the runs {(same ? "OK" : "MISMATCH")}):");
        tables.Add("");
        tables.Add("| test | off IOPS | off MiB/s | on IOPS | on MiB/s | on / off |");
        tables.Add("|---|---|---|---|---|---|");
        foreach (var t in tests)
        {
            double off = s.Median($"{t.Name}/off");
            double on = s.Median($"{t.Name}/on");
            double mib = t.BlockBytes / 1048576.0;
            tables.Add($"| {t.Name} | {off:F0} | {off * mib:F1} | {on:F0} [{s.Range($"{t.Name}/on", "F0")}] | {on * mib:F1} | {on / off:F2} |");
        }
    }
    finally
    {
        if (pair is not null)
        {
            await pair.DisposeAsync();
        }

        await stopServing.CancelAsync();
        await offServing.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
        offDevice.Dispose();
        File.Delete(offImage);
        File.Delete(onImage);
        File.Delete(Path.Combine(work, "nbd-replica.raw"));
    }

    Console.WriteLine();
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Commit and failover cost
async Task CommitBenchAsync()
{
    long size = (long)opts.NbdSizeMiB << 20;
    string image = Path.Combine(work, "commit.raw");
    int writes = opts.CommitMiB * 256;
    Console.WriteLine($"== 3. commit cost: {writes} random 4 KiB PVM writes ({opts.CommitMiB} MiB) buffered on the replica of a {opts.NbdSizeMiB} MiB image, then barrier and ReplicaDisk.Commit;");
    Console.WriteLine($"   failover cost: {writes} random 4 KiB SVM writes into the overlay (ReplicaDisk.Device.WriteAsync), then ReplicaDisk.Failover");
    Images.FillFull(image, size, seed: 4);
    var s = new Samples();
    bool allOk = true;
    long blocks = size / 4096;
    byte[] data = new byte[1 << 20];
    for (int r = 1; r <= opts.Repeat; r++)
    {
        ct.ThrowIfCancellationRequested();
        var rng = new Random(100 + r);
        rng.NextBytes(data);
        var pair = await ReplicationPair.StartAsync(image, work, "commit", ct);
        try
        {
            await pair.SyncAsync(ct);
            await pair.CheckpointAsync(ct); // epoch 1: the copy is committed, buffer empty

            var write = Stopwatch.StartNew();
            for (int i = 0; i < writes; i++)
            {
                long off = rng.NextInt64(blocks) * 4096;
                await pair.Primary.Device.WriteAsync(off, data.AsMemory(rng.Next(256) * 4096, 4096), fua: false);
            }

            double writeSeconds = write.Elapsed.TotalSeconds;
            CheckpointResult c = await pair.CheckpointAsync(ct);
            bool same = Images.Equal(image, pair.ReplicaImage);
            allOk &= same;

            SecondaryDisk svm = pair.Replica.Device!;
            for (int i = 0; i < writes; i++)
            {
                long off = rng.NextInt64(blocks) * 4096;
                await svm.WriteAsync(off, data.AsMemory(rng.Next(256) * 4096, 4096), fua: false);
            }

            long overlay = svm.OverlayBytes;
            long overlaySpilled = svm.OverlaySpilledBytes;
            var sw = Stopwatch.StartNew();
            pair.Replica.Failover();
            double failoverMs = sw.Elapsed.TotalMilliseconds;
            var status = new DiskStatus();
            pair.Replica.Report(status);
            double commitMib = c.BufferBytes / 1048576.0;
            double mergedMib = status.FailoverMergedBytes / 1048576.0;
            Console.WriteLine($"run {r} commit:   {c.BufferedRecords} records, {commitMib:F1} MiB buffered ({c.BufferSpilledBytes / 1048576.0:F1} MiB spilled) in {c.CommitMs,7:F1} ms = {c.CommitMs / commitMib,6:F2} ms/MiB; barrier drain {c.DrainMs:F0} ms; PVM writes took {writeSeconds:F2} s; replica base {(same ? "OK" : "MISMATCH")}");
            Console.WriteLine($"run {r} failover: overlay {overlay / 1048576.0:F1} MiB ({overlaySpilled / 1048576.0:F1} MiB spilled), {mergedMib:F1} MiB merged in {failoverMs,7:F1} ms = {failoverMs / mergedMib,6:F2} ms/MiB");
            s.Add("commit/ms", c.CommitMs);
            s.Add("commit/mib", commitMib);
            s.Add("failover/ms", failoverMs);
            s.Add("failover/mib", mergedMib);
        }
        finally
        {
            await pair.DisposeAsync();
            File.Delete(pair.ReplicaImage);
        }
    }

    File.Delete(image);
    if (!allOk)
    {
        exitCode = 1;
    }

    tables.Add("");
    tables.Add($"Commit and failover on the secondary ({opts.NbdSizeMiB} MiB image on {fsType}; each includes the base's fsync; replica after commit {(allOk ? "OK" : "MISMATCH")}):");
    tables.Add("");
    tables.Add("| operation | MiB | time | ms per MiB | MiB/s |");
    tables.Add("|---|---|---|---|---|");
    foreach (var (key, name) in new[] { ("commit", $"Commit: {writes} buffered random 4 KiB PVM writes"), ("failover", $"Failover: overlay of {writes} random 4 KiB SVM writes merged") })
    {
        double ms = s.Median(key + "/ms");
        double mib = s.Median(key + "/mib");
        tables.Add($"| {name} | {mib:F1} | {ms:F0} ms [{s.Range(key + "/ms", "F0")}] | {ms / mib:F2} | {mib / (ms / 1000):F0} |");
    }

    Console.WriteLine();
}

async Task<double> QemuBenchAsync(string uri, string[] testArgs, int count)
{
    var a = new List<string> { "bench", "-c", count.ToString(CultureInfo.InvariantCulture), "-d", opts.Depth.ToString(CultureInfo.InvariantCulture), "-f", "raw" };
    a.AddRange(testArgs);
    a.Add(uri);
    string output = await QemuImg.RunAsync(a, TimeSpan.FromMinutes(5), ct);
    Match m = Regex.Match(output, @"Run completed in ([0-9.]+) seconds");
    if (!m.Success)
    {
        throw new InvalidOperationException("unexpected qemu-img bench output: " + output);
    }

    return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
}

// The process's own command line: `dotnet X.dll ARGS` when started by the muxer, else the apphost (as `dotnet run` does).
static string CommandLine()
{
    string[] argv = Environment.GetCommandLineArgs();
    string head = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? $"{Environment.ProcessPath} {argv[0]}" : Environment.ProcessPath ?? argv[0];
    return string.Join(' ', argv.Skip(1).Select(Quote).Prepend(head));
}

static string Quote(string a) => a.Length > 0 && !a.Any(char.IsWhiteSpace) ? a : $"'{a}'";

/// <summary>Command line of the benchmark.</summary>
internal sealed record BenchOptions(
    string Dir, int SizeMiB, int SparsePercent, int NbdSizeMiB, int Count4k, int Count1m, int Depth, int CommitMiB, int CommitMs, int Repeat, string Only)
{
    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions("/var/tmp", 1024, 10, 256, 100_000, 1024, 16, 64, 0, 3, "sync,nbd,commit");
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            int Int() => int.Parse(Next(), CultureInfo.InvariantCulture);
            o = args[i] switch
            {
                "--dir" => o with { Dir = Next() },
                "--size-mib" => o with { SizeMiB = Int() },
                "--sparse-percent" => o with { SparsePercent = Int() },
                "--nbd-size-mib" => o with { NbdSizeMiB = Int() },
                "--count-4k" => o with { Count4k = Int() },
                "--count-1m" => o with { Count1m = Int() },
                "--depth" => o with { Depth = Int() },
                "--commit-mib" => o with { CommitMiB = Int() },
                "--commit-ms" => o with { CommitMs = Int() },
                "--repeat" => o with { Repeat = Int() },
                "--only" => o with { Only = Next() },
                _ => throw new ArgumentException($"unknown argument {args[i]}"),
            };
        }

        if (o.SizeMiB < 1 || o.NbdSizeMiB < 160 || o.SparsePercent is < 1 or > 100 || o.Count4k < 1 || o.Count1m < 1 || o.Depth < 1 || o.CommitMiB < 1 || o.CommitMs < 0 || o.Repeat < 1)
        {
            throw new ArgumentException("sizes, counts, depth and repeat must be positive; --nbd-size-mib at least 160 (the 4 KiB stride is ~156 MiB); --sparse-percent 1..100");
        }

        foreach (string part in o.Only.Split(','))
        {
            if (part is not ("sync" or "nbd" or "commit"))
            {
                throw new ArgumentException($"--only takes sync, nbd, commit (comma-separated), not {part}");
            }
        }

        return o;
    }

    public bool Runs(string part) => Only.Split(',').Contains(part);

    public string ToArgs() =>
        $"--dir {Dir} --size-mib {SizeMiB} --sparse-percent {SparsePercent} --nbd-size-mib {NbdSizeMiB} --count-4k {Count4k} --count-1m {Count1m} " +
        $"--depth {Depth} --commit-mib {CommitMiB} --commit-ms {CommitMs} --repeat {Repeat} --only {Only}";
}
