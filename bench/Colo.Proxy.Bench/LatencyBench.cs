using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;

namespace Colo.Proxy.Bench;

/// <summary>Settings of the latency mode.</summary>
/// <param name="Rate">Requests per second through the engine (paced evenly); every <paramref name="BaselineEvery"/>-th request
/// slot in between carries a baseline request instead, so the client sends Rate × BaselineEvery / (BaselineEvery − 1) in all.</param>
/// <param name="Seconds">Measured seconds in all (split into <paramref name="Rounds"/> runs).</param>
/// <param name="WarmupSeconds">Length of the unmeasured run before the measured rounds (JIT, start-up).</param>
/// <param name="Payload">TCP payload bytes per request and reply (at least 4: the packet index).</param>
/// <param name="Rounds">Measured runs, each on fresh sockets and threads.</param>
/// <param name="BaselineEvery">One request slot in this many is a baseline request (at least 2).</param>
/// <param name="SeparateGuests">A thread per guest instead of one thread serving both in turn (see
/// <see cref="LatencyBench"/>): on this 2-core host the SVM's reply then also waits for its own thread to be scheduled.</param>
public sealed record LatencyOptions(int Rate = 10_000, double Seconds = 5, double WarmupSeconds = 1, int Payload = 64, int Rounds = 5,
    int BaselineEvery = 4, bool SeparateGuests = false);

/// <summary>Result of one latency run.</summary>
public sealed class LatencyRun
{
    /// <summary>"baseline" (no engine) or "engine".</summary>
    public required string Name { get; init; }
    /// <summary>Measured requests sent.</summary>
    public int Sent { get; init; }
    /// <summary>Measured requests whose PVM reply was released.</summary>
    public int Released { get; init; }
    /// <summary>Achieved send rate over the measured part, requests/s.</summary>
    public double AchievedRate { get; init; }
    /// <summary>Measured sends that started more than two intervals late (the pacer fell behind).</summary>
    public int LateSends { get; init; }
    /// <summary>Send → release, µs, sorted.</summary>
    public required double[] EndToEndUs { get; init; }
    /// <summary>PVM reply read by the proxy → release, µs, sorted (engine runs only).</summary>
    public required double[] HoldUs { get; init; }
    /// <summary>Later of the two replies read by the proxy → release, µs, sorted: the proxy's own time (lock, compare,
    /// release), without the wait for the SVM (engine runs only).</summary>
    public required double[] ProxyUs { get; init; }
    /// <summary>Engine counters after the run (engine runs only).</summary>
    public EngineFigures? Engine { get; init; }

    /// <summary>Several runs of the same kind as one.</summary>
    /// <param name="runs">The runs (at least one).</param>
    /// <returns>The merged run.</returns>
    public static LatencyRun Merge(IReadOnlyList<LatencyRun> runs)
    {
        double[] e2e = runs.SelectMany(r => r.EndToEndUs).ToArray();
        double[] hold = runs.SelectMany(r => r.HoldUs).ToArray();
        double[] proxy = runs.SelectMany(r => r.ProxyUs).ToArray();
        Array.Sort(e2e);
        Array.Sort(hold);
        Array.Sort(proxy);
        EngineFigures? engine = null;
        foreach (LatencyRun r in runs)
        {
            if (r.Engine is { } f)
            {
                engine = engine is null ? f : engine.Value.Add(f);
            }
        }
        return new LatencyRun
        {
            Name = runs[0].Name,
            Sent = runs.Sum(r => r.Sent),
            Released = runs.Sum(r => r.Released),
            AchievedRate = runs.Sum(r => r.Sent) / runs.Sum(r => r.Sent / Math.Max(r.AchievedRate, 1e-9)),
            LateSends = runs.Sum(r => r.LateSends),
            EndToEndUs = e2e,
            HoldUs = hold,
            ProxyUs = proxy,
            Engine = engine,
        };
    }
}

/// <summary>Engine counters of latency runs (warm-up included).</summary>
/// <param name="PvmFrames">PVM frames in.</param>
/// <param name="SvmFrames">SVM frames in.</param>
/// <param name="Matched">PVM frames released by a match.</param>
/// <param name="Released">PVM frames released.</param>
/// <param name="Held">PVM frames still held at the end.</param>
/// <param name="Mismatches">Differences detected.</param>
/// <param name="CheckpointRequests">Checkpoint requests raised.</param>
/// <param name="InternalErrors">Exceptions caught in the engine.</param>
public readonly record struct EngineFigures(long PvmFrames, long SvmFrames, long Matched, long Released, long Held, long Mismatches,
    long CheckpointRequests, long InternalErrors)
{
    /// <summary>Sum of two.</summary>
    /// <param name="o">The other.</param>
    /// <returns>The sum.</returns>
    public EngineFigures Add(EngineFigures o) => new(PvmFrames + o.PvmFrames, SvmFrames + o.SvmFrames, Matched + o.Matched,
        Released + o.Released, Held + o.Held, Mismatches + o.Mismatches, CheckpointRequests + o.CheckpointRequests, InternalErrors + o.InternalErrors);

    /// <inheritdoc/>
    public override string ToString() =>
        $"pvm {PvmFrames}, svm {SvmFrames}, matched {Matched}, released {Released}, held {Held}, mismatches {Mismatches}, " +
        $"checkpoint requests {CheckpointRequests}, internal errors {InternalErrors}";
}

/// <summary>Figures of the latency mode.</summary>
/// <param name="Baseline">The run without the engine.</param>
/// <param name="Engine">The run through the engine.</param>
public sealed record LatencyReport(LatencyRun Baseline, LatencyRun Engine)
{
    /// <summary>Added latency at percentile <paramref name="p"/>: engine end-to-end minus baseline end-to-end, µs.</summary>
    /// <param name="p">Percentile in (0, 100].</param>
    /// <returns>Microseconds (may be negative within noise).</returns>
    public double Added(double p) => LatencyBench.Percentile(Engine.EndToEndUs, p) - LatencyBench.Percentile(Baseline.EndToEndUs, p);
}

/// <summary>
/// Added latency of the primary's compare path on a loopback echo. Everything runs in this process over real unix
/// stream sockets with QEMU's <c>-netdev stream</c> framing:
/// <list type="bullet">
/// <item>two <see cref="NetdevStreamListener"/>s (PVM, SVM); a "guest" thread per VM connects to its listener as QEMU
/// would and echoes every TCP segment it reads as a reply (addresses/ports swapped, its own sequence number per
/// connection, ack of the request, same payload, checksums recomputed; the SVM's reply has a different IPv4 id and
/// TTL);</item>
/// <item>a client thread sends requests on two TCP connections, interleaved: <see cref="LatencyOptions.Rate"/> requests/s
/// on the engine connection and, in every <see cref="LatencyOptions.BaselineEvery"/>-th slot between them, one on the
/// baseline connection (paced by <see cref="Pacer"/>: sleeps, then spins the last 10 µs), with <see cref="NetdevStreamConnection.WriteFrame"/> to the PVM and then the same frame to the SVM
/// (the mirror; in the real system it crosses the link to the other host);</item>
/// <item>a proxy reader task per side (<see cref="NetdevStreamConnection.ReadFrameAsync"/> as in the primary daemon)
/// and a 20 ms tick task. Replies on the <em>engine</em> connection go through <see cref="CompareEngine"/> under one
/// lock (PVM reply held until the SVM's matching reply) and the sink records the release time. Replies on the
/// <em>baseline</em> connection bypass the engine: the PVM reader releases each at once and the SVM reader discards
/// it.</item>
/// </list>
/// Per packet: send time (before the write to the PVM), time the proxy read the PVM reply, release time — all
/// <see cref="Stopwatch"/> timestamps. Because the two connections' packets are interleaved 75 µs apart (at 10 000/s) on
/// the same sockets and threads, a scheduling hiccup of this shared host hits both alike: added latency at a percentile
/// = engine(send → release) − baseline(send → release) at that percentile, both from the same moments. The per-packet
/// hold (PVM reply read → released: waiting for the SVM's reply plus the compare work and lock) is printed as well.
/// After one unmeasured run, <see cref="LatencyOptions.Rounds"/> measured runs follow, each on fresh sockets and
/// threads with its first 0.2 s discarded; samples are pooled per connection. Not included: the TAP device, the link
/// to the secondary and the rewriter there, a real guest's network stack.
/// </summary>
public static class LatencyBench
{
    private const int IndexOffset = BenchFrames.PayloadOffset;
    private const ushort EnginePort = BenchFrames.ClientPort;
    private const ushort BaselinePort = BenchFrames.ClientPort + 1;

    /// <summary>Runs the unmeasured warm-up, then the measured rounds, printing progress and the figures.</summary>
    /// <param name="o">Settings.</param>
    /// <returns>The figures.</returns>
    /// <exception cref="ArgumentException">A setting is out of range.</exception>
    public static LatencyReport Run(LatencyOptions o)
    {
        if (o.Payload < 4 || o.Payload > 1460 || o.Rate <= 0 || o.Seconds <= 0 || o.WarmupSeconds < 0)
        {
            throw new ArgumentException("latency: payload 4..1460, rate > 0, seconds > 0, warmup >= 0");
        }
        if (o.Rounds < 1 || o.BaselineEvery < 2)
        {
            throw new ArgumentException("latency: rounds >= 1, baseline-every >= 2");
        }
        Console.WriteLine(
            $"// latency: {o.Rate} req/s through the engine interleaved with {o.Rate / (o.BaselineEvery - 1)} req/s bypassing it (baseline, " +
            $"every {o.BaselineEvery}th request), {o.Payload} B payload; " +
            $"after an unmeasured {o.WarmupSeconds:0.##} s run, {o.Seconds:0.##} s measured in {o.Rounds} rounds of {o.Seconds / o.Rounds:0.##} s " +
            "(fresh sockets and threads per round, first 0.2 s of each discarded)");
        var baselines = new List<LatencyRun>();
        var engines = new List<LatencyRun>();
        if (o.WarmupSeconds > 0)
        {
            // Unmeasured: tiered JIT of both paths, thread and socket start-up.
            RunOnce(o with { Seconds = o.WarmupSeconds, WarmupSeconds = 0 });
        }
        for (int round = 0; round < o.Rounds; round++)
        {
            LatencyOptions ro = o with { Seconds = o.Seconds / o.Rounds, WarmupSeconds = Math.Min(0.2, o.WarmupSeconds) };
            (LatencyRun b, LatencyRun e) = RunOnce(ro);
            baselines.Add(b);
            engines.Add(e);
        }
        Console.WriteLine("// per round, send→release p50/p99 µs: baseline " +
            string.Join("  ", baselines.Select(r => $"{Percentile(r.EndToEndUs, 50):F0}/{Percentile(r.EndToEndUs, 99):F0}")) +
            "; engine " + string.Join("  ", engines.Select(r => $"{Percentile(r.EndToEndUs, 50):F0}/{Percentile(r.EndToEndUs, 99):F0}")));
        LatencyRun baseline = LatencyRun.Merge(baselines);
        LatencyRun engine = LatencyRun.Merge(engines);
        Print(baseline);
        Print(engine);
        var report = new LatencyReport(baseline, engine);
        Console.WriteLine($"// added latency (engine − baseline, send → release): p50 {report.Added(50):F1} µs, p99 {report.Added(99):F1} µs, p99.9 {report.Added(99.9):F1} µs");
        return report;
    }

    /// <summary>Nearest-rank percentile of a sorted array.</summary>
    /// <param name="sorted">Sorted values.</param>
    /// <param name="p">Percentile in (0, 100].</param>
    /// <returns>The value, or NaN when empty.</returns>
    public static double Percentile(double[] sorted, double p)
    {
        if (sorted.Length == 0)
        {
            return double.NaN;
        }
        // p * n / 100 in doubles can land just above a whole rank (99.9 % of 1000 is 999.0000000000001): tolerate it.
        int rank = (int)Math.Ceiling(p * sorted.Length / 100 - 1e-9);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }

    private static void Print(LatencyRun r)
    {
        Console.WriteLine(
            $"// {r.Name,-8}: sent {r.Sent} at {r.AchievedRate:F0}/s ({r.LateSends} late), released {r.Released}; " +
            $"send→release µs p50 {Percentile(r.EndToEndUs, 50):F1} p99 {Percentile(r.EndToEndUs, 99):F1} " +
            $"p99.9 {Percentile(r.EndToEndUs, 99.9):F1} max {Percentile(r.EndToEndUs, 100):F1}" +
            (r.HoldUs.Length > 0
                ? $"; PVM reply read→release µs p50 {Percentile(r.HoldUs, 50):F1} p99 {Percentile(r.HoldUs, 99):F1} p99.9 {Percentile(r.HoldUs, 99.9):F1}" +
                  $"; later reply read→release µs p50 {Percentile(r.ProxyUs, 50):F1} p99 {Percentile(r.ProxyUs, 99):F1} p99.9 {Percentile(r.ProxyUs, 99.9):F1}"
                : ""));
        if (r.Engine is { } f)
        {
            Console.WriteLine($"//           engine counters (warm-up included): {f}");
        }
    }

    /// <summary>True for the engine connection's request indexes, false for the baseline's (every <paramref name="every"/>-th).</summary>
    private static bool IsEngine(int index, int every) => index % every != every - 1;

    /// <summary>The client port of a guest → client reply (its TCP destination port).</summary>
    private static ushort ReplyClientPort(byte[] frame, int length) =>
        length >= BenchFrames.TcpOffset + 4 ? BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(BenchFrames.TcpOffset + 2)) : (ushort)0;

    private static (LatencyRun Baseline, LatencyRun Engine) RunOnce(LatencyOptions o)
    {
        // Request slots: every o.BaselineEvery-th carries a baseline request, the others engine requests (o.Rate per s).
        double slotRate = (double)o.Rate * o.BaselineEvery / (o.BaselineEvery - 1);
        int warm = (int)(slotRate * o.WarmupSeconds);
        int measured = (int)(slotRate * o.Seconds);
        int total = warm + measured;
        var sendTs = new long[total];
        var pvmReadTs = new long[total];
        var svmReadTs = new long[total];
        var releaseTs = new long[total];
        int released = 0;

        DirectoryInfo dir = Directory.CreateTempSubdirectory("colo-proxy-bench-");
        using var cts = new CancellationTokenSource();
        var sink = new TimingSink(releaseTs, () => Interlocked.Increment(ref released));
        var engine = new CompareEngine(new CompareOptions(), sink, TimeProvider.System);
        var gate = new Lock();
        NetdevStreamConnection? pvm = null, svm = null;
        Socket? pvmGuest = null, svmGuest = null;
        var tasks = new List<Task>();
        try
        {
            using var pvmListener = new NetdevStreamListener(Path.Combine(dir.FullName, "pvm.sock"));
            using var svmListener = new NetdevStreamListener(Path.Combine(dir.FullName, "svm.sock"));
            pvmGuest = Connect(pvmListener.Path);
            pvm = pvmListener.AcceptAsync(TimeSpan.FromSeconds(10), cts.Token).GetAwaiter().GetResult();
            svmGuest = Connect(svmListener.Path);
            svm = svmListener.AcceptAsync(TimeSpan.FromSeconds(10), cts.Token).GetAwaiter().GetResult();
            StartGuests(pvmGuest, svmGuest, oneThread: !o.SeparateGuests);

            NetdevStreamConnection p = pvm, s = svm;
            tasks.Add(Task.Run(async () =>
            {
                var buffer = new byte[65536];
                while (true)
                {
                    int n = await ReadOrZero(p, buffer, cts.Token);
                    if (n == 0)
                    {
                        return;
                    }
                    int idx = Index(buffer, n, total);
                    if (idx >= 0)
                    {
                        pvmReadTs[idx] = Stopwatch.GetTimestamp();
                    }
                    if (ReplyClientPort(buffer, n) == BaselinePort)
                    {
                        sink.Release(buffer.AsSpan(0, n));
                        continue;
                    }
                    lock (gate)
                    {
                        engine.OnPvmFrame(buffer.AsSpan(0, n));
                    }
                }
            }));
            tasks.Add(Task.Run(async () =>
            {
                var buffer = new byte[65536];
                while (true)
                {
                    int n = await ReadOrZero(s, buffer, cts.Token);
                    if (n == 0)
                    {
                        return;
                    }
                    if (ReplyClientPort(buffer, n) == BaselinePort)
                    {
                        continue;
                    }
                    int idx = Index(buffer, n, total);
                    if (idx >= 0)
                    {
                        svmReadTs[idx] = Stopwatch.GetTimestamp();
                    }
                    lock (gate)
                    {
                        engine.OnSvmFrame(buffer.AsSpan(0, n));
                    }
                }
            }));
            tasks.Add(Task.Run(async () =>
            {
                using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
                try
                {
                    while (await timer.WaitForNextTickAsync(cts.Token))
                    {
                        lock (gate)
                        {
                            engine.OnTick();
                        }
                    }
                }
                catch (OperationCanceledException)
                {
                }
            }));

            GC.Collect();
            GC.WaitForPendingFinalizers();
            int lateEngine = 0, lateBaseline = 0;
            long measureStart = 0, measureEnd = 0;
            var sender = new Thread(() =>
            {
                Pacer.PrepareThread();
                byte[] req = BenchFrames.Tcp(false, 0, 0, BenchFrames.Ack | BenchFrames.Psh, BenchFrames.Payload(o.Payload));
                double interval = Stopwatch.Frequency / slotRate;
                long start = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 100;
                uint[] clientSeq = [0x3000_0001, 0x3000_0001];
                uint[] guestSeq = [0x4000_0001, 0x4000_0001];
                for (int i = 0; i < total; i++)
                {
                    long target = start + (long)(i * interval);
                    long now = Pacer.WaitUntil(target);
                    if (i == warm)
                    {
                        measureStart = now;
                    }
                    if (i >= warm && now - target > 2 * interval)
                    {
                        if (IsEngine(i, o.BaselineEvery))
                        {
                            lateEngine++;
                        }
                        else
                        {
                            lateBaseline++;
                        }
                    }
                    int c = IsEngine(i, o.BaselineEvery) ? 0 : 1;
                    BinaryPrimitives.WriteUInt16BigEndian(req.AsSpan(BenchFrames.TcpOffset), c == 0 ? EnginePort : BaselinePort);
                    BinaryPrimitives.WriteUInt32BigEndian(req.AsSpan(BenchFrames.SeqOffset), clientSeq[c]);
                    BinaryPrimitives.WriteUInt32BigEndian(req.AsSpan(BenchFrames.AckOffset), guestSeq[c]);
                    BinaryPrimitives.WriteInt32BigEndian(req.AsSpan(IndexOffset), i);
                    BenchFrames.FixChecksums(req);
                    clientSeq[c] += (uint)o.Payload;
                    guestSeq[c] += (uint)o.Payload;
                    sendTs[i] = Stopwatch.GetTimestamp();
                    p.WriteFrame(req);
                    s.WriteFrame(req);
                }
                measureEnd = Stopwatch.GetTimestamp();
            })
            { Name = "client", IsBackground = true };
            sender.Start();
            sender.Join();
            long deadline = Stopwatch.GetTimestamp() + 2 * Stopwatch.Frequency;
            while (Volatile.Read(ref released) < total && Stopwatch.GetTimestamp() < deadline)
            {
                Thread.Sleep(5);
            }

            EngineFigures counters;
            lock (gate)
            {
                CompareCounters c = engine.Counters;
                counters = new EngineFigures(c.PvmFrames, c.SvmFrames, c.MatchedFrames, c.ReleasedFrames, c.HeldFrames, c.Mismatches,
                    c.TotalCheckpointRequests, c.InternalErrors);
            }
            double seconds = measureEnd > measureStart ? (double)(measureEnd - measureStart) / Stopwatch.Frequency : 0;
            LatencyRun Collect(bool engineSide)
            {
                var e2e = new List<double>(measured);
                var hold = new List<double>(engineSide ? measured : 0);
                var proxy = new List<double>(engineSide ? measured : 0);
                int sent = 0;
                double usPerTick = 1e6 / Stopwatch.Frequency;
                for (int i = warm; i < total; i++)
                {
                    if (IsEngine(i, o.BaselineEvery) != engineSide)
                    {
                        continue;
                    }
                    sent++;
                    long r = Volatile.Read(ref releaseTs[i]);
                    if (r == 0)
                    {
                        continue;
                    }
                    e2e.Add((r - sendTs[i]) * usPerTick);
                    if (engineSide)
                    {
                        hold.Add((r - pvmReadTs[i]) * usPerTick);
                        proxy.Add((r - Math.Max(pvmReadTs[i], Volatile.Read(ref svmReadTs[i]))) * usPerTick);
                    }
                }
                double[] e2eSorted = e2e.ToArray();
                double[] holdSorted = hold.ToArray();
                double[] proxySorted = proxy.ToArray();
                Array.Sort(e2eSorted);
                Array.Sort(holdSorted);
                Array.Sort(proxySorted);
                return new LatencyRun
                {
                    Name = engineSide ? "engine" : "baseline",
                    Sent = sent,
                    Released = e2eSorted.Length,
                    AchievedRate = seconds > 0 ? sent / seconds : 0,
                    LateSends = engineSide ? lateEngine : lateBaseline,
                    EndToEndUs = e2eSorted,
                    HoldUs = holdSorted,
                    ProxyUs = proxySorted,
                    Engine = engineSide ? counters : null,
                };
            }
            return (Collect(engineSide: false), Collect(engineSide: true));
        }
        finally
        {
            cts.Cancel();
            pvm?.Dispose();
            svm?.Dispose();
            pvmGuest?.Dispose();
            svmGuest?.Dispose();
            try
            {
                Task.WaitAll(tasks.ToArray(), TimeSpan.FromSeconds(5));
            }
            catch (AggregateException)
            {
            }
            try
            {
                dir.Delete(recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static Socket Connect(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Connect(new UnixDomainSocketEndPoint(path));
        return s;
    }

    private static async Task<int> ReadOrZero(NetdevStreamConnection c, byte[] buffer, CancellationToken ct)
    {
        try
        {
            return await c.ReadFrameAsync(buffer, ct);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or IOException or SocketException)
        {
            return 0;
        }
    }

    /// <summary>The packet index carried in the first 4 payload bytes, or -1.</summary>
    private static int Index(byte[] frame, int length, int total)
    {
        if (length < IndexOffset + 4)
        {
            return -1;
        }
        int i = BinaryPrimitives.ReadInt32BigEndian(frame.AsSpan(IndexOffset));
        return (uint)i < (uint)total ? i : -1;
    }

    /// <summary>
    /// Starts the "guests": per VM, reads framed TCP requests and writes a reply per request, like an echo server would.
    /// <paramref name="oneThread"/>: one thread serves both VMs in turn (request to the PVM, then the same request to the
    /// SVM, as the client sends them), so the SVM's reply does not wait for a second guest thread to get a CPU — on two
    /// hosts each VM has its own; otherwise a thread per VM.
    /// </summary>
    private static void StartGuests(Socket pvmGuest, Socket svmGuest, bool oneThread)
    {
        var pvm = new EchoGuest(pvmGuest, ipIdBase: 1, ttl: 64);
        var svm = new EchoGuest(svmGuest, ipIdBase: 30000, ttl: 63);
        if (oneThread)
        {
            Start("guests", () =>
            {
                while (pvm.EchoOne() && svm.EchoOne())
                {
                }
            });
            return;
        }
        Start("pvm-guest", () =>
        {
            while (pvm.EchoOne())
            {
            }
        });
        Start("svm-guest", () =>
        {
            while (svm.EchoOne())
            {
            }
        });

        static void Start(string name, Action loop)
        {
            var t = new Thread(() =>
            {
                try
                {
                    loop();
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                }
            })
            { Name = name, IsBackground = true };
            t.Start();
        }
    }

    /// <summary>One VM's echo: a reply per request (addresses and ports swapped, own sequence number per connection).</summary>
    private sealed class EchoGuest(Socket socket, int ipIdBase, byte ttl)
    {
        private readonly byte[] _buf = new byte[4 + NetdevStreamConnection.MaxFrameLength];
        private readonly uint[] _guestSeq = [0x4000_0001, 0x4000_0001]; // per client port: engine, baseline connection
        private ushort _ipId = (ushort)ipIdBase;

        /// <summary>Reads one request and writes its reply; false when the socket closed.</summary>
        public bool EchoOne()
        {
            byte[] buf = _buf;
            if (!ReadExact(socket, buf, 0, 4))
            {
                return false;
            }
            int len = BinaryPrimitives.ReadInt32BigEndian(buf);
            if (len < BenchFrames.PayloadOffset || len > NetdevStreamConnection.MaxFrameLength || !ReadExact(socket, buf, 4, len))
            {
                return false;
            }
            Span<byte> f = buf.AsSpan(4, len);
            Swap(f, 0, 6, 6);                                      // MACs
            Swap(f, BenchFrames.IpOffset + 12, BenchFrames.IpOffset + 16, 4); // IPv4 addresses
            Swap(f, BenchFrames.TcpOffset, BenchFrames.TcpOffset + 2, 2);     // ports
            int payload = len - BenchFrames.PayloadOffset;
            int c = BinaryPrimitives.ReadUInt16BigEndian(f.Slice(BenchFrames.TcpOffset + 2)) == EnginePort ? 0 : 1;
            uint clientSeq = BinaryPrimitives.ReadUInt32BigEndian(f.Slice(BenchFrames.SeqOffset));
            BinaryPrimitives.WriteUInt32BigEndian(f.Slice(BenchFrames.SeqOffset), _guestSeq[c]);
            BinaryPrimitives.WriteUInt32BigEndian(f.Slice(BenchFrames.AckOffset), clientSeq + (uint)payload);
            _guestSeq[c] += (uint)payload;
            BinaryPrimitives.WriteUInt16BigEndian(f.Slice(BenchFrames.IpOffset + 4), _ipId++);
            f[BenchFrames.IpOffset + 8] = ttl;
            BenchFrames.FixChecksums(f);
            int sent = 0;
            while (sent < len + 4)
            {
                sent += socket.Send(buf, sent, len + 4 - sent, SocketFlags.None);
            }
            return true;
        }
    }

    private static void Swap(Span<byte> f, int a, int b, int n)
    {
        Span<byte> tmp = stackalloc byte[8];
        f.Slice(a, n).CopyTo(tmp);
        f.Slice(b, n).CopyTo(f.Slice(a, n));
        tmp.Slice(0, n).CopyTo(f.Slice(b, n));
    }

    private static bool ReadExact(Socket s, byte[] buf, int offset, int count)
    {
        while (count > 0)
        {
            int n = s.Receive(buf, offset, count, SocketFlags.None);
            if (n == 0)
            {
                return false;
            }
            offset += n;
            count -= n;
        }
        return true;
    }

    /// <summary>Records the release time of each packet (by the index in its payload).</summary>
    private sealed class TimingSink(long[] releaseTs, Action onRelease) : ICompareSink
    {
        public void Release(ReadOnlySpan<byte> frame)
        {
            long now = Stopwatch.GetTimestamp();
            if (frame.Length >= IndexOffset + 4)
            {
                int i = BinaryPrimitives.ReadInt32BigEndian(frame.Slice(IndexOffset));
                if ((uint)i < (uint)releaseTs.Length)
                {
                    Volatile.Write(ref releaseTs[i], now);
                }
            }
            onRelease();
        }

        public void RequestCheckpoint(CheckpointReason reason)
        {
        }
    }
}
