// Benchmarks of the COLO proxy hot path (docs/ARCHITECTURE.md, "Benchmarks"): prints figures, is not a test.
//   1. matched TCP through CompareEngine on one core (64 B and 1460 B payloads), BenchmarkDotNet, allocation per op;
//   2. SequenceRewriter, RewriteFromSvm + RewriteFromClient per operation, BenchmarkDotNet;
//   3. (--latency) added latency of the compare path on a loopback echo over -netdev stream sockets at a paced rate.
// Usage: dotnet run -c Release --project bench/Colo.Proxy.Bench -- [--latency | --no-latency]
//        [--rate 10000] [--seconds 5] [--warmup 1] [--payload 64] [--rounds 5] [--baseline-every 4] [--separate-guests] [BenchmarkDotNet args, e.g. --filter '*Matched*']
// Default: the BenchmarkDotNet suite (short in-process job), then the latency mode, then a summary against the targets.
using System.Globalization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Colo.Proxy.Bench;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

const double TargetMatchedPerSecond = 1_000_000;
const double TargetAddedP99Us = 100;

bool latencyOnly = false, noLatency = false;
var latency = new LatencyOptions();
var bdnArgs = new List<string>();
try
{
    for (int i = 0; i < args.Length; i++)
    {
        string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
        switch (args[i])
        {
            case "--latency": latencyOnly = true; break;
            case "--no-latency": noLatency = true; break;
            case "--rate": latency = latency with { Rate = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
            case "--seconds": latency = latency with { Seconds = double.Parse(Next(), CultureInfo.InvariantCulture) }; break;
            case "--warmup": latency = latency with { WarmupSeconds = double.Parse(Next(), CultureInfo.InvariantCulture) }; break;
            case "--payload": latency = latency with { Payload = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
            case "--rounds": latency = latency with { Rounds = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
            case "--baseline-every": latency = latency with { BaselineEvery = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
            case "--separate-guests": latency = latency with { SeparateGuests = true }; break;
            default: bdnArgs.Add(args[i]); break;
        }
    }
    if (latencyOnly && noLatency)
    {
        throw new ArgumentException("--latency and --no-latency exclude each other");
    }
}
catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine("usage: Colo.Proxy.Bench [--latency | --no-latency] [--rate 10000] [--seconds 5] [--warmup 1] [--payload 64] [--rounds 5] [--baseline-every 4] [--separate-guests] [BenchmarkDotNet args]");
    return 2;
}

Console.WriteLine($"// {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, load average {LoadAverage()}");

var results = new List<BenchmarkReport>();
if (!latencyOnly)
{
    // Short job, run in this process (no generated project to build): 1 launch, 3 warm-up and 5 measured iterations.
    Job job = Job.Default
        .WithToolchain(InProcessEmitToolchain.Instance)
        .WithLaunchCount(1)
        .WithWarmupCount(3)
        .WithIterationCount(5)
        .WithId("Short-InProcess");
    IConfig config = DefaultConfig.Instance
        .AddJob(job)
        .AddDiagnoser(MemoryDiagnoser.Default)
        .AddColumn(RateColumn.Frames, RateColumn.PayloadBytes)
        .WithOptions(ConfigOptions.JoinSummary)
        .WithArtifactsPath(Path.Combine(AppContext.BaseDirectory, "BenchmarkDotNet.Artifacts"));
    Type[] types = { typeof(MatchedTcpBenchmarks), typeof(RewriterBenchmarks) };
    IEnumerable<Summary> summaries = bdnArgs.Count == 0
        ? BenchmarkRunner.Run(types, config)
        : BenchmarkSwitcher.FromTypes(types).Run(bdnArgs.ToArray(), config);
    foreach (Summary s in summaries)
    {
        results.AddRange(s.Reports);
    }
}

LatencyReport? lat = null;
if (!noLatency)
{
    lat = LatencyBench.Run(latency);
}

// ---------------------------------------------------------------- summary
Console.WriteLine();
Console.WriteLine($"// ===== Colo.Proxy.Bench summary ({DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, load average {LoadAverage()}) =====");
Console.WriteLine($"{"figure",-52} {"value",18} {"target",14} {"result",7}");
bool allPass = true;
void Row(string figure, string value, string target = "", bool? pass = null)
{
    string result = pass is null ? "" : pass.Value ? "PASS" : "FAIL";
    if (pass == false)
    {
        allPass = false;
    }
    Console.WriteLine($"{figure,-52} {value,18} {target,14} {result,7}");
}

BenchmarkReport? Find(Type t, int payload) =>
    results.FirstOrDefault(r => r.BenchmarkCase.Descriptor.Type == t && RateColumn.PayloadOf(r.BenchmarkCase) == payload && r.ResultStatistics is not null);

string Alloc(BenchmarkReport r)
{
    long? b = r.GcStats.GetBytesAllocatedPerOperation(r.BenchmarkCase);
    return b is null ? "?" : $"{b} B/op";
}

foreach (int payload in new[] { 64, 1460 })
{
    BenchmarkReport? r = Find(typeof(MatchedTcpBenchmarks), payload);
    if (r is null)
    {
        continue;
    }
    double ns = r.ResultStatistics!.Mean;
    double pairs = 1e9 / ns;
    bool? pass = payload == 64 ? pairs >= TargetMatchedPerSecond : null;
    Row($"matched TCP {payload} B: PVM+SVM pairs/s (1 core)", $"{pairs / 1e6:F2} M", payload == 64 ? ">= 1.00 M" : "", pass);
    Row($"matched TCP {payload} B: frames/s", $"{2 * pairs / 1e6:F2} M");
    Row($"matched TCP {payload} B: payload bytes/s to client", $"{pairs * payload / 1e6:F1} MB/s");
    Row($"matched TCP {payload} B: ns per pair, allocated", $"{ns:F1} ns, {Alloc(r)}", "0 B/op", r.GcStats.GetBytesAllocatedPerOperation(r.BenchmarkCase) == 0);
}
foreach (int payload in new[] { 64, 1460 })
{
    BenchmarkReport? r = Find(typeof(RewriterBenchmarks), payload);
    if (r is null)
    {
        continue;
    }
    double ns = r.ResultStatistics!.Mean;
    Row($"rewriter {payload} B: frames/s (SVM→client + client→SVM)", $"{2e9 / ns / 1e6:F2} M");
    Row($"rewriter {payload} B: ns per frame, allocated", $"{ns / 2:F1} ns, {Alloc(r)}", "0 B/op", r.GcStats.GetBytesAllocatedPerOperation(r.BenchmarkCase) == 0);
}
if (lat is not null)
{
    Row($"latency at {latency.Rate}/s, {latency.Payload} B: added p50", $"{lat.Added(50):F1} µs");
    Row("latency: added p99 (engine − baseline, send→release)", $"{lat.Added(99):F1} µs", "<= 100 µs", lat.Added(99) <= TargetAddedP99Us);
    Row("latency: added p99.9", $"{lat.Added(99.9):F1} µs");
    double hold99 = LatencyBench.Percentile(lat.Engine.HoldUs, 99);
    Row("latency: per-packet hold p50 (PVM reply read→release)", $"{LatencyBench.Percentile(lat.Engine.HoldUs, 50):F1} µs");
    Row("latency: per-packet hold p99", $"{hold99:F1} µs", "<= 100 µs", hold99 <= TargetAddedP99Us);
    Row("latency: per-packet hold p99.9", $"{LatencyBench.Percentile(lat.Engine.HoldUs, 99.9):F1} µs");
    Row("latency: proxy's own time p50 (later reply read→release)", $"{LatencyBench.Percentile(lat.Engine.ProxyUs, 50):F1} µs");
    Row("latency: proxy's own time p99", $"{LatencyBench.Percentile(lat.Engine.ProxyUs, 99):F1} µs");
    Row("latency: released / sent (engine run)", $"{lat.Engine.Released} / {lat.Engine.Sent}", "all", lat.Engine.Released == lat.Engine.Sent);
}
Console.WriteLine(allPass ? "// all targets met" : "// some targets missed (see FAIL rows)");
return 0;

static string LoadAverage()
{
    try
    {
        return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
    }
    catch (IOException)
    {
        return "?";
    }
}
