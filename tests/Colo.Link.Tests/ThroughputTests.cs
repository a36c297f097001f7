using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using Colo.Link.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace Colo.Link.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialCollection
{
    public const string Name = "Serial (timing-sensitive)";
}

/// <summary>Figures are printed, not asserted (run with --logger "console;verbosity=detailed" to see them).</summary>
[Collection(SerialCollection.Name)]
public sealed class ThroughputTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Throughput_Loopback_Printed()
    {
        await Measure(1024 * 1024, 1024, senders: 1);
        await Measure(100, 500_000, senders: 1);
        await Measure(100, 500_000, senders: 4);
    }

    private async Task Measure(int payloadSize, int messages, int senders)
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(NullLogger.Instance);
        await using LinkConnection c = client;
        await using LinkConnection s = server;
        long received = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = server.RunReceiveLoopAsync((_, _, payload) =>
        {
            if (++received == messages)
            {
                done.TrySetResult();
            }

            return default;
        });

        byte[] payload = new byte[payloadSize];
        int perSender = messages / senders;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, senders).Select(_ => Task.Run(async () =>
        {
            for (int i = 0; i < perSender; i++)
            {
                await client.SendAsync(MessageType.ClientFrame, 1, payload);
            }
        })));
        await done.Task.Within(120);
        double seconds = clock.Elapsed.TotalSeconds;

        output.WriteLine(
            $"{messages} x {payloadSize} B, {senders} sender(s): {seconds * 1000:F0} ms, {messages / seconds:N0} msg/s, {(double)messages * payloadSize / seconds / (1024 * 1024):N1} MiB/s payload");
    }

    [Fact]
    public async Task Send_SteadyState_AllocatesNothing()
    {
        using var drainListener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        drainListener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        drainListener.Listen(1);
        Task<Socket> accept = drainListener.AcceptAsync();
        await using LinkConnection client = await LinkConnection.ConnectAsync((IPEndPoint)drainListener.LocalEndPoint!, LinkPair.SetupTimeout, NullLogger.Instance);
        using Socket drain = await accept;
        var drainThread = new Thread(() =>
        {
            byte[] sink = new byte[256 * 1024];
            try
            {
                while (drain.Receive(sink) > 0)
                {
                }
            }
            catch (SocketException)
            {
            }
        })
        { IsBackground = true };
        drainThread.Start();

        byte[] small = new byte[100];
        byte[] large = new byte[200_000];
        for (int i = 0; i < 20_000; i++)
        {
            await client.SendAsync(MessageType.SvmFrame, 1, small);
            await client.SendAsync(MessageType.CheckpointPages, 1, small, large);
        }

        // Measured off the xunit synchronization context, whose posts would allocate.
        const int Messages = 100_000;
        long allocated = await Task.Run(async () =>
        {
            long before = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = 0; i < Messages; i++)
            {
                await client.SendAsync(MessageType.SvmFrame, 1, small).ConfigureAwait(false);
                if (i % 10 == 0)
                {
                    await client.SendAsync(MessageType.CheckpointPages, 1, small, large).ConfigureAwait(false);
                }
            }

            return GC.GetTotalAllocatedBytes(precise: true) - before;
        });
        output.WriteLine($"allocated {allocated} bytes over {Messages * 1.1:F0} sends ({(double)allocated / (Messages * 1.1):F3} B/send)");
        // Debug builds compile async state machines as classes (one allocation per call); judge only optimised builds.
        bool optimized = typeof(LinkConnection).Assembly.GetCustomAttribute<DebuggableAttribute>()?.IsJITOptimizerDisabled != true;
        output.WriteLine(optimized ? "Colo.Link is optimised: asserting" : "Colo.Link is a Debug build: not asserting");
        if (optimized)
        {
            Assert.True(allocated < Messages, $"allocated {allocated} bytes");
        }
    }
}
