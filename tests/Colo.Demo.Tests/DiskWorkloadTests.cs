using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Xunit.Abstractions;

namespace Colo.Demo.Tests;

public class DiskWorkloadTests(ITestOutputHelper output)
{
    private static DiskWorkloadOptions Options(FakeRedisServer server, double seconds) => new()
    {
        GuestIp = IPAddress.Loopback,
        RedisPort = server.Port,
        Duration = TimeSpan.FromSeconds(seconds),
        RequestTimeout = TimeSpan.FromMilliseconds(400),
        ReconnectDelay = TimeSpan.FromMilliseconds(20),
        Verify = new DiskVerifyOptions { BatchSize = 97, RetryDelay = TimeSpan.FromMilliseconds(20) },
    };

    [Fact]
    public async Task HealthyRunAcksEverythingAndLosesNothing()
    {
        await using var server = new FakeRedisServer();
        string path = Path.GetTempFileName();
        try
        {
            var options = new DiskWorkloadOptions
            {
                GuestIp = IPAddress.Loopback,
                RedisPort = server.Port,
                Duration = TimeSpan.FromSeconds(0.5),
                ResultPath = path,
            };
            DiskWorkloadResult r = await new DiskWorkload().RunAsync(options);
            output.WriteLine($"acked {r.Acked}");
            Assert.True(r.Acked > 10);
            Assert.Equal(r.Attempted, r.Acked);
            Assert.Equal(r.Acked, r.LastAcked);
            Assert.Equal(0, r.Unknown + r.Rejected + r.Reconnects);
            Assert.Single(r.AckedRanges);
            Assert.Equal([1, r.Acked], r.AckedRanges[0]);
            Assert.True(r.Verify.Complete);
            Assert.Equal(r.Acked, r.Verify.Checked);
            Assert.Equal(0, r.Verify.Lost);
            Assert.Equal(1, server.Connections); // one connection for the writes and the read-back
            Assert.Equal("v1", server.Store["k1"]);

            string json = await File.ReadAllTextAsync(path);
            using var doc = JsonDocument.Parse(json);
            Assert.Equal(["attempted", "acked", "last_acked", "unknown", "rejected", "reconnects", "max_stall_ms", "gaps", "acked_ranges", "unknown_ids", "verify"],
                doc.RootElement.EnumerateObject().Select(p => p.Name));
            Assert.Equal(["complete", "checked", "lost", "lost_sample", "retries"], doc.RootElement.GetProperty("verify").EnumerateObject().Select(p => p.Name));
            DiskWorkloadResult back = DiskWorkloadResult.FromJson(json);
            Assert.Equal(r.AckedIds(), back.AckedIds());
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task AckedUnknownRejectedAndLostAreToldApart()
    {
        await using var server = new FakeRedisServer();
        server.SetActions[5] = SetAction.CloseApplied;   // unknown (applied), reconnect
        server.SetActions[9] = SetAction.Hang;           // unknown (timeout), reconnect
        server.SetActions[12] = SetAction.Error;         // rejected, same connection
        server.SetActions[20] = SetAction.LoseAfterAck;  // acked, then missing
        server.SetActions[21] = SetAction.CorruptAfterAck; // acked, then wrong value
        DiskWorkloadResult r = await new DiskWorkload().RunAsync(Options(server, 1.5));
        output.WriteLine(r.ToJson());

        Assert.True(r.Attempted > 30, $"only {r.Attempted} writes");
        Assert.Equal(2, r.Unknown);
        Assert.Equal([5, 9], r.UnknownIds);
        Assert.Equal(1, r.Rejected);
        Assert.Equal(2, r.Reconnects);
        Assert.Equal(3, server.Connections);
        Assert.Equal(r.Attempted - 3, r.Acked);
        Assert.Equal([[1, 4], [6, 8], [10, 11], [13, r.Attempted]], r.AckedRanges);
        Assert.DoesNotContain(5L, r.AckedIds());
        Assert.True(r.Verify.Complete);
        Assert.Equal(r.Acked, r.Verify.Checked);
        Assert.Equal(2, r.Verify.Lost);
        Assert.Equal([20, 21], r.Verify.LostSample);
        Assert.True(r.MaxStallMs >= 350, $"max stall {r.MaxStallMs}"); // the 400 ms timeout of write 9
    }

    [Fact]
    public async Task ReadBackRetriesAfterLoadingAndDroppedConnection()
    {
        await using var server = new FakeRedisServer();
        for (long id = 1; id <= 30; id++)
            server.Store[DiskWorkload.Key(id)] = DiskWorkload.Value(id);
        server.LoadingGets = 3; // an error reply in the first batch: the whole batch is retried
        server.DropOnNextGet = true;
        var options = new DiskVerifyOptions { BatchSize = 7, RetryDelay = TimeSpan.FromMilliseconds(10) };
        DiskVerifyResult v = await DiskWorkload.VerifyKeysAsync(server.EndPoint, [.. Enumerable.Range(1, 30).Select(i => (long)i)], options);
        Assert.True(v.Complete, v.Error);
        Assert.Equal(30, v.Checked);
        Assert.Equal(0, v.Lost);
        Assert.True(v.Retries >= 2, $"retries {v.Retries}");
    }

    [Fact]
    public async Task ReadBackGivesUpWhenTheServerIsGone()
    {
        int port;
        using (var l = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            l.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            port = ((IPEndPoint)l.LocalEndPoint!).Port;
        }
        var options = new DiskVerifyOptions { MaxAttempts = 2, RetryDelay = TimeSpan.Zero, BatchTimeout = TimeSpan.FromSeconds(1) };
        DiskVerifyResult v = await DiskWorkload.VerifyKeysAsync(new IPEndPoint(IPAddress.Loopback, port), [1, 2, 3], options);
        Assert.False(v.Complete);
        Assert.Equal(0, v.Checked);
        Assert.NotNull(v.Error);
        Assert.Contains("key 1 of 3", v.Error);
        var empty = await DiskWorkload.VerifyKeysAsync(new IPEndPoint(IPAddress.Loopback, port), [], options);
        Assert.True(empty.Complete);
    }

    [Fact]
    public async Task UnreachableServerIsCountedNotThrown()
    {
        var server = new FakeRedisServer();
        int port = server.Port;
        await server.DisposeAsync();
        var options = new DiskWorkloadOptions
        {
            GuestIp = IPAddress.Loopback,
            RedisPort = port,
            Duration = TimeSpan.FromMilliseconds(300),
            ReconnectDelay = TimeSpan.FromMilliseconds(50),
            Verify = new DiskVerifyOptions { MaxAttempts = 1 },
        };
        DiskWorkloadResult r = await new DiskWorkload().RunAsync(options);
        Assert.Equal(0, r.Attempted);
        Assert.Equal(0, r.Acked);
        Assert.True(r.Verify.Complete); // nothing acknowledged, nothing to read back
        Assert.True(r.MaxStallMs >= 250);
    }

    [Fact]
    public async Task CancellationEndsEarlyWithoutReadBack()
    {
        await using var server = new FakeRedisServer();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        // Cancel once some writes were stored (not after a fixed time: a loaded machine may not have sent any by then).
        var cancelSoon = Task.Run(async () =>
        {
            while (server.Store.Count < 20 && !cts.IsCancellationRequested)
                await Task.Delay(10);
            cts.Cancel();
        });
        DiskWorkloadResult r = await new DiskWorkload().RunAsync(Options(server, 60), cts.Token);
        await cancelSoon;
        Assert.True(r.Acked > 0);
        Assert.False(r.Verify.Complete);
        Assert.NotNull(r.Verify.Error);
        Assert.Equal(r.Attempted, r.Acked + r.Unknown);
    }

    [Fact]
    public async Task RespRepliesSplitAcrossPackets()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        string big = new('x', 200_000);
        var serve = Task.Run(async () =>
        {
            using Socket s = await listener.AcceptSocketAsync();
            string all = $"+OK\r\n$5\r\nhel\r\n\r\n$-1\r\n:42\r\n-ERR bad\r\n$0\r\n\r\n${big.Length}\r\n{big}\r\n";
            byte[] bytes = Encoding.ASCII.GetBytes(all);
            int pos = 0;
            foreach (int size in new[] { 1, 3, 5, 2, 7, 1, 4, 11 })
            {
                await s.SendAsync(bytes.AsMemory(pos, size), SocketFlags.None);
                pos += size;
                await Task.Delay(15);
            }
            await s.SendAsync(bytes.AsMemory(pos), SocketFlags.None);
            s.Shutdown(SocketShutdown.Send);
            await Task.Delay(200);
        });
        using var conn = await RespConnection.ConnectAsync((IPEndPoint)listener.LocalEndpoint, TimeSpan.FromSeconds(5), default);
        Assert.True((await conn.ReadReplyAsync(default)).IsOk);
        Assert.Equal(new RespReply('$', "hel\r\n"), await conn.ReadReplyAsync(default)); // a bulk may contain CRLF
        Assert.Equal(new RespReply('$', null), await conn.ReadReplyAsync(default));
        Assert.Equal(new RespReply(':', "42"), await conn.ReadReplyAsync(default));
        Assert.True((await conn.ReadReplyAsync(default)).IsError);
        Assert.Equal(new RespReply('$', ""), await conn.ReadReplyAsync(default));
        Assert.Equal(big, (await conn.ReadReplyAsync(default)).Text);
        await Assert.ThrowsAsync<IOException>(() => conn.ReadReplyAsync(default)); // closed by the server
        await serve;
        Assert.Equal("*3\r\n$3\r\nSET\r\n$2\r\nk7\r\n$2\r\nv7\r\n", Encoding.ASCII.GetString(RespConnection.Command("SET", DiskWorkload.Key(7), DiskWorkload.Value(7))));
    }

    [Fact]
    public void AckedRangesCompressContiguousIds()
    {
        var r = new DiskWorkloadResult();
        foreach (long id in new long[] { 1, 2, 3, 5, 6, 9 })
            r.RecordAcked(id);
        Assert.Equal([[1, 3], [5, 6], [9, 9]], r.AckedRanges);
        Assert.Equal([1, 2, 3, 5, 6, 9], r.AckedIds());
        Assert.Equal(6, r.Acked);
        Assert.Equal(9, r.LastAcked);
        for (int i = 0; i < DiskWorkloadResult.MaxUnknownIdsKept + 5; i++)
            r.RecordUnknown(100 + i);
        Assert.Equal(DiskWorkloadResult.MaxUnknownIdsKept + 5, r.Unknown);
        Assert.Equal(DiskWorkloadResult.MaxUnknownIdsKept, r.UnknownIds.Count);
    }

    [Fact]
    public void OptionsValidate()
    {
        new DiskWorkloadOptions { GuestIp = IPAddress.Loopback }.Validate();
        Assert.Throws<ArgumentException>(() => new DiskWorkloadOptions { GuestIp = IPAddress.Loopback, Duration = TimeSpan.Zero }.Validate());
        Assert.Throws<ArgumentException>(() => new DiskWorkloadOptions { GuestIp = IPAddress.Loopback, RequestTimeout = TimeSpan.Zero }.Validate());
        Assert.Throws<ArgumentException>(() => new DiskWorkloadOptions { GuestIp = IPAddress.Loopback, Verify = new DiskVerifyOptions { BatchSize = 0 } }.Validate());
        Assert.Throws<ArgumentException>(() => new DiskVerifyOptions { MaxAttempts = 0 }.Validate());
    }
}
