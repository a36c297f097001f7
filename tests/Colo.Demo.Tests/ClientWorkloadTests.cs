using System.Net;
using System.Text.Json;
using Xunit.Abstractions;

namespace Colo.Demo.Tests;

public class ClientWorkloadTests(ITestOutputHelper output)
{
    [RedisFact]
    public async Task HealthyRunHasNoErrors()
    {
        using RedisServer redis = await RedisServer.StartAsync();
        await using var http = new CounterHttpServer();
        string dir = Directory.CreateTempSubdirectory("colo-demo-test").FullName;
        try
        {
            var options = new ClientWorkloadOptions
            {
                GuestIp = IPAddress.Loopback,
                RedisPort = redis.Port,
                HttpPort = http.Port,
                Duration = TimeSpan.FromSeconds(3),
                BenchmarkStart = TimeSpan.FromSeconds(0.5),
                BenchmarkRequests = 2000,
                BenchmarkClients = 10,
                BenchmarkTimeout = TimeSpan.FromSeconds(30),
                ResultPath = Path.Combine(dir, "result.json"),
                EventsPath = Path.Combine(dir, "events.jsonl"),
            };
            ClientWorkloadResult r = await new ClientWorkload().RunAsync(options);
            string json = await File.ReadAllTextAsync(options.ResultPath);
            output.WriteLine(json);

            Assert.True(r.Redis.Ops > 0);
            Assert.True(r.Redis.Continuous);
            Assert.Equal(0, r.Redis.Errors);
            Assert.Equal(0, r.Redis.Reconnects);
            Assert.True(r.Http.Requests > 0);
            Assert.Equal(0, r.Http.Errors);
            Assert.True(r.RedisBenchmark.Ran);
            Assert.Equal(0, r.RedisBenchmark.Errors);
            Assert.True(r.RedisBenchmark.RequestsPerS > 0);

            // The file round-trips and has the contract's names.
            ClientWorkloadResult back = await ClientWorkloadResult.ReadAsync(options.ResultPath);
            Assert.Equal(r.Redis.Ops, back.Redis.Ops);
            using var doc = JsonDocument.Parse(json);
            Assert.Equal(["redis", "http", "redis_benchmark"], doc.RootElement.EnumerateObject().Select(p => p.Name));
            Assert.Equal(["ops", "errors", "continuous", "reconnects", "max_stall_ms", "gaps"], doc.RootElement.GetProperty("redis").EnumerateObject().Select(p => p.Name));
            Assert.Equal(["requests_per_s", "errors", "ran"], doc.RootElement.GetProperty("redis_benchmark").EnumerateObject().Select(p => p.Name));

            string[] events = await File.ReadAllLinesAsync(options.EventsPath);
            Assert.Contains(events, e => e.Contains("\"event\":\"start\""));
            Assert.Contains(events, e => e.Contains("\"event\":\"benchmark_end\""));
            Assert.Contains(events, e => e.Contains("\"event\":\"end\""));
            Assert.All(events, e => Assert.True(JsonDocument.Parse(e).RootElement.GetProperty("at_ms").GetInt64() > 1_600_000_000_000));

            // The counter really was incremented by our ops (redis-benchmark uses other keys).
            var get = await TestTools.RunAsync("redis-cli", "-p", redis.Port.ToString(), "GET", "demo");
            Assert.Equal(r.Redis.Ops.ToString(), get.StdOut.Trim());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [RedisFact]
    public async Task ServerRestartIsCountedAsGapErrorReconnectAndDiscontinuity()
    {
        using RedisServer redis = await RedisServer.StartAsync();
        var options = new ClientWorkloadOptions
        {
            GuestIp = IPAddress.Loopback,
            RedisPort = redis.Port,
            EnableHttp = false,
            Duration = TimeSpan.FromSeconds(10), // leaves time to reconnect after the restart on a loaded machine
            OperationTimeout = TimeSpan.FromSeconds(2),
            EventsPath = Path.GetTempFileName(),
        };
        Task<ClientWorkloadResult> run = new ClientWorkload().RunAsync(options);
        // Kill only once the loop is running (start-up can be slow on a loaded machine).
        var until = DateTime.UtcNow.AddSeconds(2);
        while (DateTime.UtcNow < until)
        {
            var get = await TestTools.RunAsync("redis-cli", "-p", redis.Port.ToString(), "GET", "demo");
            if (long.TryParse(get.StdOut.Trim(), out long n) && n >= 100)
                break;
            await Task.Delay(20);
        }
        long killedAt = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        redis.Kill();
        await Task.Delay(1000);
        await redis.StartAgainAsync(); // empty data set: the counter restarts at 1
        ClientWorkloadResult r = await run;
        output.WriteLine(r.ToJson());
        output.WriteLine(await File.ReadAllTextAsync(options.EventsPath));
        File.Delete(options.EventsPath);

        Assert.True(r.Redis.Ops > 0);
        Assert.True(r.Redis.Errors >= 1);
        Assert.True(r.Redis.Reconnects >= 1);
        Assert.False(r.Redis.Continuous);
        Assert.True(r.Redis.MaxStallMs >= 900, $"max stall {r.Redis.MaxStallMs}");
        long gap = DemoReport.ComputeClientGapMs(r.Redis.Gaps, killedAt);
        Assert.InRange(gap, 900, 6000);
        Assert.False(r.RedisBenchmark.Ran);
    }

    [RedisFact]
    public async Task HungBenchmarkIsKilledAndCountedAsError()
    {
        // Nothing listens here: Debian's redis-benchmark then hangs after "Could not connect".
        int port = TestTools.FreeLoopbackPort();
        var options = new ClientWorkloadOptions
        {
            GuestIp = IPAddress.Loopback,
            RedisPort = port,
            EnableRedis = false,
            EnableHttp = false,
            Duration = TimeSpan.FromMilliseconds(100),
            BenchmarkStart = TimeSpan.Zero,
            BenchmarkRequests = 100,
            BenchmarkTimeout = TimeSpan.FromSeconds(2),
        };
        var sw = System.Diagnostics.Stopwatch.StartNew();
        ClientWorkloadResult r = await new ClientWorkload().RunAsync(options);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10));
        Assert.True(r.RedisBenchmark.Ran);
        Assert.True(r.RedisBenchmark.Errors >= 1);
    }

    [Fact]
    public async Task UnreachableServicesAreErrorsNotExceptions()
    {
        int port = TestTools.FreeLoopbackPort();
        var options = new ClientWorkloadOptions
        {
            GuestIp = IPAddress.Loopback,
            RedisPort = port,
            HttpPort = port,
            Duration = TimeSpan.FromMilliseconds(600),
            ReconnectDelay = TimeSpan.FromMilliseconds(100),
        };
        ClientWorkloadResult r = await new ClientWorkload().RunAsync(options);
        Assert.Equal(0, r.Redis.Ops);
        Assert.True(r.Redis.Errors >= 1);
        Assert.True(r.Redis.MaxStallMs >= 500);
        Assert.NotEmpty(r.Redis.Gaps);
        Assert.Equal(0, r.Http.Requests);
        Assert.True(r.Http.Errors >= 1);
    }

    [Fact]
    public async Task CancellationEndsEarlyWithPartialResult()
    {
        int port = TestTools.FreeLoopbackPort();
        var options = new ClientWorkloadOptions { GuestIp = IPAddress.Loopback, RedisPort = port, HttpPort = port, Duration = TimeSpan.FromSeconds(60) };
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(500));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        ClientWorkloadResult r = await new ClientWorkload().RunAsync(options, cts.Token);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5));
        Assert.True(r.Redis.Errors >= 1);
    }
}
