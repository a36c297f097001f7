using Colo.Nbd.Tests.Support;
using Xunit.Abstractions;
using static Colo.Nbd.Tests.Support.NbdTestClient;

namespace Colo.Nbd.Tests;

public sealed class TransmissionTests(ITestOutputHelper output)
{
    private const long Size = 4 * 1024 * 1024;

    private static byte[] Pattern(int length, int seed)
    {
        byte[] b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public async Task Write_ThenRead_ReturnsTheData()
    {
        var device = new RecordingDevice(Size);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            byte[] data = Pattern(65536 + 17, 1);
            Assert.Equal(0u, await c.CommandAsync(CmdWrite, 12345, (uint)data.Length, payload: data));
            (uint error, byte[] back) = await c.ReadBlockAsync(12345, (uint)data.Length);
            Assert.Equal(0u, error);
            Assert.Equal(data, back);
            Assert.Equal(data, device.Inner.Contents.Slice(12345, data.Length).ToArray());
            Assert.Contains($"write 12345 {data.Length}", device.Calls);
        }
    }

    [Fact]
    public async Task Write_AtTheVeryEnd_Succeeds()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            Assert.Equal(0u, await c.CommandAsync(CmdWrite, Size - 4, 4, payload: [9, 9, 9, 9]));
            Assert.Equal(0u, (await c.ReadBlockAsync(Size - 4, 4)).Error);
            Assert.Equal(0u, (await c.ReadBlockAsync(Size, 0)).Error); // zero-length at the end: allowed
        }
    }

    [Fact]
    public async Task WriteWithFua_PassesFuaToTheDevice()
    {
        var device = new RecordingDevice(Size);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            Assert.Equal(0u, await c.CommandAsync(CmdWrite, 0, 8, FlagFua, payload: new byte[8]));
            Assert.Equal(0u, await c.CommandAsync(CmdWrite, 8, 8, payload: new byte[8]));
            Assert.Equal(["write 0 8 fua", "write 8 8"], device.Calls.ToArray());
        }
    }

    [Fact]
    public async Task Flush_FlushesTheDevice()
    {
        var device = new RecordingDevice(Size);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
            Assert.Equal(["flush"], device.Calls.ToArray());
        }
    }

    [Fact]
    public async Task Trim_ReachesTheDevice_AndFuaTrimIsFollowedByAFlush()
    {
        var device = new RecordingDevice(Size);
        device.Inner.Contents.Fill(0xee);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            Assert.Equal(0u, await c.CommandAsync(CmdTrim, 4096, 8192));
            Assert.Equal(0u, await c.CommandAsync(CmdTrim, 0, 4096, FlagFua));
            Assert.Equal(["trim 4096 8192", "trim 0 4096", "flush"], device.Calls.ToArray());
            Assert.Equal(new byte[8192], (await c.ReadBlockAsync(4096, 8192)).Data); // the memory device zeroes
        }
    }

    [Fact]
    public async Task WriteZeroes_HonoursNoHoleAndFua()
    {
        var device = new RecordingDevice(Size);
        device.Inner.Contents.Fill(0xee);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            Assert.Equal(0u, await c.CommandAsync(CmdWriteZeroes, 0, 100));
            Assert.Equal(0u, await c.CommandAsync(CmdWriteZeroes, 100, 100, FlagNoHole));
            Assert.Equal(0u, await c.CommandAsync(CmdWriteZeroes, 200, 100, FlagNoHole | FlagFua));
            Assert.Equal(["zero 0 100", "zero 100 100 nohole", "zero 200 100 nohole", "flush"], device.Calls.ToArray());
            (uint error, byte[] data) = await c.ReadBlockAsync(0, 301);
            Assert.Equal(0u, error);
            Assert.All(data[..300], b => Assert.Equal(0, b));
            Assert.Equal(0xee, data[300]);
        }
    }

    [Fact]
    public async Task WriteZeroes_LargerThanThePayloadLimit_IsAllowed()
    {
        var device = new RecordingDevice(64L * 1024 * 1024);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            Assert.Equal(0u, await c.CommandAsync(CmdWriteZeroes, 0, 48 * 1024 * 1024));
            Assert.Equal(0u, await c.CommandAsync(CmdTrim, 0, 48 * 1024 * 1024));
        }
    }

    [Theory]
    [InlineData(CmdRead, Size - 4, 8u, EInval)]
    [InlineData(CmdRead, Size + 1, 0u, EInval)]
    [InlineData(CmdRead, ulong.MaxValue - 2, 8u, EInval)] // offset + length overflows
    [InlineData(CmdTrim, Size - 4, 8u, EInval)]
    [InlineData(CmdWriteZeroes, Size - 4, 8u, ENoSpc)]
    [InlineData(CmdRead, 0, 32u * 1024 * 1024 + 1, EInval)] // oversized read
    [InlineData(CmdCache, 0, 4096u, EInval)] // not advertised
    [InlineData(CmdBlockStatus, 0, 4096u, EInval)] // needs structured replies
    [InlineData((ushort)77, 0, 4096u, EInval)] // unknown command
    public async Task BadRequest_GetsTheError_AndTheConnectionKeepsWorking(ushort command, ulong offset, uint length, uint expected)
    {
        var device = new RecordingDevice(Size);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            Assert.Equal(expected, await c.CommandAsync(command, offset, length));
            Assert.Empty(device.Calls);
            Assert.Equal(0u, await c.CommandAsync(CmdWrite, 0, 3, payload: [1, 2, 3]));
            Assert.Equal([1, 2, 3], (await c.ReadBlockAsync(0, 3)).Data);
        }
    }

    [Theory]
    [InlineData(Size - 2, 4u, 0, ENoSpc)] // past the end: payload still consumed
    [InlineData(0, 32u * 1024 * 1024 + 4096, 0, EInval)] // oversized: payload read and discarded
    [InlineData(0, 16u, FlagNoHole, EInval)] // NO_HOLE is not a WRITE flag
    [InlineData(0, 16u, FlagDf, EInval)] // DF needs structured replies
    public async Task BadWrite_PayloadIsSkipped_ErrorReplied_ConnectionKeepsWorking(ulong offset, uint length, ushort flags, uint expected)
    {
        var device = new RecordingDevice(Size);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            byte[] payload = new byte[length];
            payload.AsSpan().Fill(0x5a);
            Assert.Equal(expected, await c.CommandAsync(CmdWrite, offset, length, flags, payload));
            Assert.Empty(device.Calls);

            // The payload did not get parsed as requests: the stream is still in step.
            Assert.Equal(0u, await c.CommandAsync(CmdWrite, 100, 3, payload: [1, 2, 3]));
            Assert.Equal([1, 2, 3], (await c.ReadBlockAsync(100, 3)).Data);
        }
    }

    [Fact]
    public async Task WriteTooLargeToDiscard_ClosesOnlyThatConnection()
    {
        var options = new NbdServerOptions { MaxDiscardedPayload = 1024 * 1024 };
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output, options: options);
        (NbdTestClient bad, _, _) = await h.ConnectAndGoAsync();
        await using (bad)
        {
            await bad.SendRequestAsync(CmdWrite, 1, 0, 0xffff_0000);
            Assert.True(await bad.WaitClosedAsync());
        }

        (NbdTestClient good, _, _) = await h.ConnectAndGoAsync();
        await using (good)
        {
            Assert.Equal(0u, await good.CommandAsync(CmdFlush, 0, 0));
        }
    }

    [Fact]
    public async Task ReadOnlyDevice_WritesTrimsAndZeroes_EPerm()
    {
        var device = new RecordingDevice(Size, readOnly: true);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            Assert.Equal(EPerm, await c.CommandAsync(CmdWrite, 0, 4, payload: [1, 2, 3, 4]));
            Assert.Equal(EPerm, await c.CommandAsync(CmdTrim, 0, 4));
            Assert.Equal(EPerm, await c.CommandAsync(CmdWriteZeroes, 0, 4));
            Assert.Equal(0u, (await c.ReadBlockAsync(0, 4)).Error);
            Assert.Equal(["read 0 4"], device.Calls.ToArray());
        }
    }

    [Fact]
    public async Task DeviceFailure_EIO_OrTheDevicesOwnError_ConnectionKeepsWorking()
    {
        var device = new RecordingDevice(Size);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            device.FailNext = new IOException("disk on fire");
            Assert.Equal(EIO, await c.CommandAsync(CmdWrite, 0, 4, payload: [1, 2, 3, 4]));
            device.FailNext = new BlockDeviceException(NbdError.NoSpc, "overlay full");
            Assert.Equal(ENoSpc, await c.CommandAsync(CmdWrite, 0, 4, payload: [1, 2, 3, 4]));
            device.FailNext = new InvalidOperationException("bug");
            Assert.Equal(EIO, (await c.ReadBlockAsync(0, 4)).Error);
            Assert.Equal(0u, (await c.ReadBlockAsync(0, 4)).Error);
        }
    }

    [Fact]
    public async Task BadRequestMagic_ClosesOnlyThatConnection()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        (NbdTestClient good, _, _) = await h.ConnectAndGoAsync();
        (NbdTestClient bad, _, _) = await h.ConnectAndGoAsync();
        await using (good)
        await using (bad)
        {
            await bad.SendRequestAsync(CmdRead, 1, 0, 512, magic: 0x12345678);
            Assert.True(await bad.WaitClosedAsync());
            Assert.Equal(0u, (await good.ReadBlockAsync(0, 512)).Error);
        }
    }

    [Fact]
    public async Task Pipelined_SlowRequest_IsOvertakenByLaterOnes()
    {
        var device = new RecordingDevice(Size);
        device.Inner.Contents[..4096].Fill(1);
        device.Inner.Contents.Slice(4096, 4096).Fill(2);
        device.Hold(0);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            await c.SendRequestAsync(CmdRead, 100, 0, 4096);
            await c.SendRequestAsync(CmdRead, 200, 4096, 4096);
            await c.SendRequestAsync(CmdFlush, 300, 0, 0);

            var order = new List<ulong>();
            for (int i = 0; i < 2; i++)
            {
                (uint error, ulong handle) = await c.ReadReplyAsync();
                Assert.Equal(0u, error);
                order.Add(handle);
                if (handle == 200)
                {
                    Assert.All(await c.ReadExactAsync(4096), b => Assert.Equal(2, b));
                }
            }

            Assert.Equal([200ul, 300ul], order.Order().ToArray()); // the held read has not been answered
            device.Release(0);
            (uint error0, ulong handle0) = await c.ReadReplyAsync();
            Assert.Equal((0u, 100ul), (error0, handle0));
            Assert.All(await c.ReadExactAsync(4096), b => Assert.Equal(1, b));
        }
    }

    [Fact]
    public async Task Pipelined_ManyMixedRequests_AllAnsweredCorrectly()
    {
        var device = new MemoryBlockDevice(Size);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            const int Blocks = 256;
            const int BlockSize = 4096;

            // 256 writes sent back to back, replies read afterwards (the server must not deadlock on a full socket).
            Task sender = Task.Run(async () =>
            {
                for (int i = 0; i < Blocks; i++)
                {
                    await c.SendRequestAsync(CmdWrite, (ulong)i, (ulong)(i * BlockSize), BlockSize, payload: Pattern(BlockSize, i));
                }
            });
            var seen = new HashSet<ulong>();
            for (int i = 0; i < Blocks; i++)
            {
                (uint error, ulong handle) = await c.ReadReplyAsync();
                Assert.Equal(0u, error);
                Assert.True(seen.Add(handle));
            }

            await sender;

            // Then 256 reads in flight at once, in reverse order; each reply's data must match its handle.
            sender = Task.Run(async () =>
            {
                for (int i = Blocks - 1; i >= 0; i--)
                {
                    await c.SendRequestAsync(CmdRead, (ulong)(1000 + i), (ulong)(i * BlockSize), BlockSize);
                }
            });
            seen.Clear();
            for (int i = 0; i < Blocks; i++)
            {
                (uint error, ulong handle) = await c.ReadReplyAsync();
                Assert.Equal(0u, error);
                Assert.True(seen.Add(handle));
                Assert.Equal(Pattern(BlockSize, (int)handle - 1000), await c.ReadExactAsync(BlockSize));
            }

            await sender;
        }
    }

    [Fact]
    public async Task Disc_AnswersInFlightRequestsThenCloses()
    {
        var device = new RecordingDevice(Size);
        device.Hold(0);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            await c.SendRequestAsync(CmdRead, 5, 0, 16);
            await c.SendRequestAsync(CmdDisc, 6, 0, 0);
            await Task.Delay(100);
            device.Release(0);
            (uint error, ulong handle) = await c.ReadReplyAsync();
            Assert.Equal((0u, 5ul), (error, handle));
            await c.ReadExactAsync(16);
            Assert.True(await c.WaitClosedAsync());
        }
    }

    [Fact]
    public async Task ConcurrentClients_SeeEachOthersWrites()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        var clients = new List<NbdTestClient>();
        for (int i = 0; i < 4; i++)
        {
            clients.Add((await h.ConnectAndGoAsync()).Client);
        }

        await Task.WhenAll(clients.Select((c, i) => c.CommandAsync(CmdWrite, (ulong)(i * 4096), 4096, FlagFua, Pattern(4096, i))));
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(Pattern(4096, i), (await clients[(i + 1) % 4].ReadBlockAsync((ulong)(i * 4096), 4096)).Data);
        }

        Assert.Equal(4, h.Server.ActiveConnections);
        foreach (NbdTestClient c in clients)
        {
            await c.DisposeAsync();
        }
    }

    [Fact]
    public async Task ServerShutdown_AnswersInFlightThenClosesEveryConnection()
    {
        var device = new RecordingDevice(Size);
        device.Hold(0);
        var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            await c.SendRequestAsync(CmdRead, 9, 0, 16);
            await Task.Delay(100);
            ValueTask stopping = h.DisposeAsync();
            await Task.Delay(100);
            device.Release(0);
            (uint error, ulong handle) = await c.ReadReplyAsync();
            Assert.Equal((0u, 9ul), (error, handle));
            await c.ReadExactAsync(16);
            Assert.True(await c.WaitClosedAsync());
            await stopping;
            Assert.Equal(0, h.Server.ActiveConnections);
            Assert.False(File.Exists(h.SocketPath));
        }
    }

    [Fact]
    public async Task ServerShutdown_HungDevice_ConnectionClosedAfterTheGrace()
    {
        var device = new RecordingDevice(Size);
        device.Hold(0);
        var h = new ServerHarness(device, output, options: new NbdServerOptions { ShutdownGrace = TimeSpan.FromMilliseconds(200) });
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            await c.SendRequestAsync(CmdRead, 9, 0, 16);
            await Task.Delay(100);
            await h.DisposeAsync(); // must not wait for the held read forever
            Assert.True(await c.WaitClosedAsync());
            device.Release(0);
        }
    }

    [Fact]
    public async Task PeerClosingWithRequestsInFlight_LeavesTheServerServing()
    {
        var device = new RecordingDevice(Size);
        device.Hold(0);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await c.SendRequestAsync(CmdRead, 1, 0, 4096);
        await c.SendRequestAsync(CmdWrite, 2, 8192, 4096, payload: new byte[100]); // truncated payload
        await c.DisposeAsync();
        await Task.Delay(100);
        device.Release(0);

        (NbdTestClient again, _, _) = await h.ConnectAndGoAsync();
        await using (again)
        {
            Assert.Equal(0u, (await again.ReadBlockAsync(4096, 16)).Error);
        }
    }

    [Fact]
    public async Task PeerNotReadingReplies_ClosedAfterTheSendTimeout()
    {
        var options = new NbdServerOptions { SendTimeout = TimeSpan.FromMilliseconds(300) };
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output, options: options);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            c.Socket.ReceiveBufferSize = 4096;
            for (int i = 0; i < 4; i++)
            {
                await c.SendRequestAsync(CmdRead, (ulong)i, 0, (uint)Size); // 16 MiB of replies nobody reads
            }

            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (h.Server.ActiveConnections > 0 && sw.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(50);
            }

            Assert.Equal(0, h.Server.ActiveConnections);
        }
    }

    [Fact]
    public async Task LargeWritesBetweenSmallRequests_SentInOneBurst_StayInStep()
    {
        var device = new MemoryBlockDevice(16L * 1024 * 1024);
        await using var h = new ServerHarness(device, output);
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            int[] sizes = [1, 4096, 128 * 1024, 128 * 1024 + 1, 1024 * 1024, 3, 5 * 1024 * 1024, 65536];
            var burst = new MemoryStream();
            long offset = 0;
            var expected = new List<(long Offset, byte[] Data)>();
            for (int i = 0; i < sizes.Length; i++)
            {
                byte[] data = Pattern(sizes[i], 100 + i);
                byte[] header = new byte[28];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(header, RequestMagic);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(6), CmdWrite);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(8), (ulong)i);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(16), (ulong)offset);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(24), (uint)data.Length);
                burst.Write(header);
                burst.Write(data);
                expected.Add((offset, data));
                offset += data.Length + 7;
            }

            Task send = c.WriteAsync(burst.ToArray());
            for (int i = 0; i < sizes.Length; i++)
            {
                Assert.Equal(0u, (await c.ReadReplyAsync()).Error);
            }

            await send;
            foreach ((long o, byte[] data) in expected)
            {
                Assert.Equal(data, (await c.ReadBlockAsync((ulong)o, (uint)data.Length)).Data);
            }
        }
    }

    [Fact]
    public async Task ServeTcp_OnLoopback_Works()
    {
        var server = new NbdServer(new MemoryBlockDevice(Size), "tcp0", new TestLogger(output));
        using var stop = new CancellationTokenSource();
        Task serving = server.ServeTcpAsync(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0), out System.Net.IPEndPoint bound, stop.Token);
        await using (NbdTestClient c = await NbdTestClient.ConnectTcpAsync(bound))
        {
            await c.ReadGreetingAsync();
            await c.SendClientFlagsAsync(3);
            (ulong size, _) = await c.GoAsync("tcp0");
            Assert.Equal((ulong)Size, size);
            Assert.Equal(0u, await c.CommandAsync(CmdWrite, 0, 2, payload: [4, 2]));
            Assert.Equal([4, 2], (await c.ReadBlockAsync(0, 2)).Data);
        }

        await stop.CancelAsync();
        await serving.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
