// Benchmark: our NBD server against Debian's qemu-nbd on the same raw image, both driven by `qemu-img bench`.
// Usage: dotnet run -c Release --project bench/Colo.Nbd.Bench -- [--dir /dev/shm] [--size-mib 256]
//        [--count-4k 200000] [--count-1m 4096] [--depth 16] [--repeat 3] [--async-io] [--only ours|qemu]
//        [--qemu-aio threads|io_uring]
// Prints one line per run and a summary table (median of the repeats) with the ratio ours / qemu-nbd.
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Colo.Nbd;
using Microsoft.Extensions.Logging.Abstractions;

var opts = BenchOptions.Parse(args);
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

string work = Path.Combine(opts.Dir, $"colo-nbd-bench-{Environment.ProcessId}");
Directory.CreateDirectory(work);
string image = Path.Combine(work, "bench.raw");
string oursSocket = Path.Combine(work, "ours.sock");
string qemuSocket = Path.Combine(work, "qemu.sock");
const string Export = "bench";
Process? qemuNbd = null;
using var stop = new CancellationTokenSource();
Task? serving = null;
RawFileBlockDevice? device = null;
try
{
    long size = opts.SizeMiB * 1024L * 1024;
    Console.WriteLine($"image {image}: {opts.SizeMiB} MiB filled with data; qemu-img bench depth {opts.Depth}, median of {opts.Repeat} runs; ours with {(opts.AsyncIo ? "asyncIo (thread pool)" : "synchronous pread/pwrite")}");
    Console.WriteLine($"host: {Environment.ProcessorCount} cpus, {RuntimeVersion()}, {Version("qemu-img", "--version")}");
    FillImage(image, size);

    device = RawFileBlockDevice.Open(image, asyncIo: opts.AsyncIo);
    var server = new NbdServer(device, Export, NullLogger.Instance);
    serving = server.ServeUnixAsync(oursSocket, stop.Token);

    // qemu-nbd with the page cache like ours (writeback: flush = fdatasync); -t keeps it serving across runs.
    qemuNbd = Process.Start(new ProcessStartInfo("qemu-nbd")
    {
        ArgumentList = { "-k", qemuSocket, "-f", "raw", "-x", Export, "--cache=writeback", $"--aio={opts.QemuAio}", "-t", "-e", "4", image },
        UseShellExecute = false,
    })!;
    WaitForSocket(qemuSocket, qemuNbd);
    Console.WriteLine($"qemu-nbd pid {qemuNbd.Id}: qemu-nbd -k {qemuSocket} -f raw -x {Export} --cache=writeback --aio={opts.QemuAio} -t -e 4 {image}");

    string Uri(string socket) => $"nbd+unix:///{Export}?socket={socket}";

    // Strided offsets: qemu-img bench has no random mode; a step of 40009 blocks (prime, so coprime with the
    // number of blocks) makes consecutive requests land ~150 MiB apart and still visits every block.
    long step4k = 40009L * 4096 % size;
    var tests = new List<(string Name, string[] Args, int Count, int BlockBytes)>
    {
        ("4k read (strided)", ["-s", "4k", "-S", step4k.ToString(CultureInfo.InvariantCulture)], opts.Count4k, 4096),
        ("4k write (strided)", ["-w", "-s", "4k", "-S", step4k.ToString(CultureInfo.InvariantCulture)], opts.Count4k, 4096),
        ("1M read (sequential)", ["-s", "1M"], opts.Count1m, 1 << 20),
        ("1M write (sequential)", ["-w", "-s", "1M"], opts.Count1m, 1 << 20),
    };

    // Warm-up: JIT, page cache, connection paths.
    foreach (string s in new[] { oursSocket, qemuSocket })
    {
        foreach (var t in tests)
        {
            await BenchAsync(Uri(s), t.Args, Math.Max(100, t.Count / 20), opts.Depth);
        }
    }

    var results = new Dictionary<(string Test, string Server), List<double>>();
    for (int r = 0; r < opts.Repeat; r++)
    {
        foreach (var t in tests)
        {
            // Alternate which server goes first so drift in machine load does not favour one.
            string[] order = (r % 2 == 0) ? ["ours", "qemu-nbd"] : ["qemu-nbd", "ours"];
            foreach (string who in order)
            {
                if (opts.Only is not null && !who.StartsWith(opts.Only, StringComparison.Ordinal))
                {
                    continue;
                }

                double seconds = await BenchAsync(Uri(who == "ours" ? oursSocket : qemuSocket), t.Args, t.Count, opts.Depth);
                double iops = t.Count / seconds;
                Console.WriteLine($"run {r + 1} {t.Name,-22} {who,-8} {t.Count,8} ops {seconds,7:F3} s {iops,10:F0} IOPS {iops * t.BlockBytes / (1 << 20),9:F1} MiB/s");
                CollectionsMarshalAdd(results, (t.Name, who), iops);
            }
        }
    }

    Console.WriteLine();
    Console.WriteLine("| test | ours IOPS | ours MiB/s | qemu-nbd IOPS | qemu-nbd MiB/s | ours / qemu-nbd |");
    Console.WriteLine("|---|---|---|---|---|---|");
    foreach (var t in tests)
    {
        double ours = Median(results.GetValueOrDefault((t.Name, "ours")));
        double qemu = Median(results.GetValueOrDefault((t.Name, "qemu-nbd")));
        double mib = t.BlockBytes / (double)(1 << 20);
        Console.WriteLine($"| {t.Name} | {ours:F0} | {ours * mib:F1} | {qemu:F0} | {qemu * mib:F1} | {(qemu > 0 ? ours / qemu : double.NaN):F2} |");
    }
}
finally
{
    if (qemuNbd is not null)
    {
        try
        {
            qemuNbd.Kill(); // by PID
            qemuNbd.WaitForExit(5000);
        }
        catch (InvalidOperationException)
        {
        }

        qemuNbd.Dispose();
    }

    await stop.CancelAsync();
    if (serving is not null)
    {
        await serving;
    }

    device?.Dispose();
    Directory.Delete(work, recursive: true);
}

static async Task<double> BenchAsync(string uri, string[] testArgs, int count, int depth)
{
    var args = new List<string> { "bench", "-c", count.ToString(CultureInfo.InvariantCulture), "-d", depth.ToString(CultureInfo.InvariantCulture), "-f", "raw" };
    args.AddRange(testArgs);
    args.Add(uri);
    string output = await QemuImg.RunAsync(args, TimeSpan.FromMinutes(5));
    Match m = Regex.Match(output, @"Run completed in ([0-9.]+) seconds");
    if (!m.Success)
    {
        throw new InvalidOperationException("unexpected qemu-img bench output: " + output);
    }

    return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
}

static void FillImage(string path, long size)
{
    using FileStream fs = new(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite);
    byte[] chunk = new byte[1 << 20];
    var rng = new Random(42);
    for (long done = 0; done < size; done += chunk.Length)
    {
        rng.NextBytes(chunk);
        fs.Write(chunk, 0, (int)Math.Min(chunk.Length, size - done));
    }
}

static void WaitForSocket(string path, Process process)
{
    var sw = Stopwatch.StartNew();
    while (!File.Exists(path))
    {
        if (process.HasExited || sw.Elapsed > TimeSpan.FromSeconds(10))
        {
            throw new InvalidOperationException("qemu-nbd did not create its socket");
        }

        Thread.Sleep(20);
    }
}

static double Median(List<double>? values)
{
    if (values is null || values.Count == 0)
    {
        return double.NaN;
    }

    values.Sort();
    return values.Count % 2 == 1 ? values[values.Count / 2] : (values[(values.Count / 2) - 1] + values[values.Count / 2]) / 2;
}

static void CollectionsMarshalAdd(Dictionary<(string, string), List<double>> d, (string, string) key, double value)
{
    if (!d.TryGetValue(key, out List<double>? list))
    {
        d[key] = list = [];
    }

    list.Add(value);
}

static string RuntimeVersion() => System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription;

static string Version(string tool, string arg)
{
    using Process p = Process.Start(new ProcessStartInfo(tool, arg) { RedirectStandardOutput = true, UseShellExecute = false })!;
    string first = p.StandardOutput.ReadLine() ?? "";
    p.WaitForExit();
    return first;
}

/// <summary>Command line of the benchmark.</summary>
internal sealed record BenchOptions(string Dir, int SizeMiB, int Count4k, int Count1m, int Depth, int Repeat, bool AsyncIo, string? Only, string QemuAio)
{
    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions("/dev/shm", 256, 200_000, 4096, 16, 3, false, null, "threads");
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            o = args[i] switch
            {
                "--dir" => o with { Dir = Next() },
                "--size-mib" => o with { SizeMiB = int.Parse(Next(), CultureInfo.InvariantCulture) },
                "--count-4k" => o with { Count4k = int.Parse(Next(), CultureInfo.InvariantCulture) },
                "--count-1m" => o with { Count1m = int.Parse(Next(), CultureInfo.InvariantCulture) },
                "--depth" => o with { Depth = int.Parse(Next(), CultureInfo.InvariantCulture) },
                "--repeat" => o with { Repeat = int.Parse(Next(), CultureInfo.InvariantCulture) },
                "--async-io" => o with { AsyncIo = true },
                "--only" => o with { Only = Next() },
                "--qemu-aio" => o with { QemuAio = Next() },
                _ => throw new ArgumentException($"unknown argument {args[i]}"),
            };
        }

        return o;
    }
}
